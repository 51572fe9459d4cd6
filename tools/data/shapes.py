"""Rendering shared by the synthetic shapes datasets.

Every image has a textured background (solid, gradient, noise or random
lines) and 1-6 shapes of varied size, colour and texture (solid, stripes,
noise, gradient); later shapes occlude earlier ones. A shape is *kept*
(annotated) when its visible part is large enough: at least ``MIN_AREA``
pixels, ``MIN_AREA_FRACTION`` of the image and ``MIN_VISIBLE_FRACTION`` of
the shape's own drawn area. Image ``i`` (from 1) of split ``s`` (0 train,
1 val) draws from its own ``numpy.random.default_rng([seed, s, i])``, so
the output is a function of the seed and the image size alone, and the
COCO and semantic segmentation writers of a seed and size render the same
images (the classification writer draws one shape of a chosen class an
image from the same generators).
"""
import shutil
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from rich.progress import Progress

SHAPES_CLASSES = ('circle', 'rectangle', 'triangle', 'star', 'ellipse', 'ring')
SPLITS = ('train', 'val')
MAX_OBJECTS = 6
RADIUS_RANGE = (0.07, 0.22)  # outer radius, fraction of the shorter side
MARGIN = 0.4  # centre to border, fraction of the radius: 60 % may leave
MIN_AREA = 16  # visible pixels a kept shape has, at least ...
MIN_AREA_FRACTION = 0.0015  # ... and this fraction of the image
MIN_VISIBLE_FRACTION = 0.2  # and of the shape's own drawn area
MIN_CONTRAST = 60.  # colour distance of a shape to what it covers
MIN_IMAGE_SIZE = 32


class ShapesImage(NamedTuple):
    """One rendered image and who owns each of its pixels.

    Attributes:
        image (np.ndarray): The BGR ``uint8`` image, shape (H, W, 3).
        owner (np.ndarray): ``int16`` map, shape (H, W): the draw index of
            the shape visible at each pixel, -1 on the background.
        labels (tuple[int]): Label (an index of SHAPES_CLASSES) of every
            drawn shape, by draw index.
        kept (tuple[bool]): Per drawn shape, whether its visible part is
            large enough to annotate.
    """
    image: np.ndarray
    owner: np.ndarray
    labels: tuple
    kept: tuple

    @property
    def objects(self):
        """list[tuple]: ``(label, visible mask)`` of the kept shapes, in
        draw order; each mask is a bool array of shape (H, W)."""
        return [(label, self.owner == index)
                for index, label in enumerate(self.labels) if self.kept[index]]


def _colour(rng):
    return rng.uniform(0, 255, 3).astype(np.float32)


def _ramp(rng, height, width):
    """A linear ramp from 0 to 1 across the box in a random direction."""
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * np.cos(theta) + ys * np.sin(theta)
    ramp -= ramp.min()
    return ramp / max(float(ramp.max()), 1.)


def _background(rng, height, width):
    """A solid, gradient, noise or random-lines background (float32)."""
    kind = rng.integers(4)
    colour = _colour(rng)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = colour
    if kind in (1, 3):  # gradient, or gradient under lines
        canvas += _ramp(rng, height, width)[..., None] * (
            _colour(rng) - colour)
    if kind == 2:  # blotchy low-frequency noise plus fine grain
        cells = rng.normal(0, 40, (rng.integers(2, 9), rng.integers(2, 9), 3))
        canvas += cv2.resize(
            cells.astype(np.float32), (width, height),
            interpolation=cv2.INTER_CUBIC)
        canvas += rng.normal(0, 8, (height, width, 1)).astype(np.float32)
    if kind == 3:
        for _ in range(rng.integers(4, 16)):
            ends = rng.uniform(0, (width, height), (2, 2)).round().astype(int)
            cv2.line(canvas, tuple(map(int, ends[0])),
                     tuple(map(int, ends[1])),
                     _colour(rng).tolist(), int(rng.integers(1, 4)))
    return canvas


def _texture(rng, height, width):
    """A solid, striped, noisy or gradient fill for a shape's box."""
    kind = rng.integers(4)
    colour = _colour(rng)
    fill = np.empty((height, width, 3), np.float32)
    fill[:] = colour
    if kind == 1:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        ys, xs = np.mgrid[0:height, 0:width]
        stripes = (xs * np.cos(theta) + ys * np.sin(theta)) / period % 1 < .5
        fill[stripes] = _colour(rng)
    elif kind == 2:
        fill += rng.normal(0, rng.uniform(10, 30),
                           (height, width, 1)).astype(np.float32)
    elif kind == 3:
        fill += _ramp(rng, height, width)[..., None] * (_colour(rng) - colour)
    return fill


def _polygon(mask, centre, radii, angles):
    points = centre + radii[:, None] * np.stack(
        [np.cos(angles), np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [points.round().astype(np.int32)], 1)


def _draw_shape(mask, label, centre, radius, rng):
    """Fill shape ``label`` (an index of SHAPES_CLASSES) into ``mask``."""
    angle = rng.uniform(0, 2 * np.pi)
    name = SHAPES_CLASSES[label]
    centre_px = (int(round(centre[0])), int(round(centre[1])))
    if name == 'circle':
        cv2.circle(mask, centre_px, int(round(radius)), 1, -1)
    elif name == 'rectangle':  # side ratio 0.45-1, squares included
        half = np.arctan(rng.uniform(0.45, 1.))
        _polygon(mask, centre, np.full(4, radius),
                 angle + np.array([half, np.pi - half, np.pi + half, -half]))
    elif name == 'triangle':
        _polygon(
            mask, centre, radius * rng.uniform(0.85, 1., 3),
            angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3))
    elif name == 'star':
        points = int(rng.integers(5, 7))
        radii = np.tile([radius, radius * rng.uniform(0.38, 0.55)], points)
        _polygon(mask, centre, radii,
                 angle + np.arange(2 * points) * np.pi / points)
    elif name == 'ellipse':
        axes = (int(round(radius)),
                int(round(radius * rng.uniform(0.35, 0.6))))
        cv2.ellipse(mask, centre_px, axes, float(np.degrees(angle)), 0, 360, 1,
                    -1)
    else:  # ring; a hole as wide as the ring would leave nothing
        outer = int(round(radius))
        inner = int(round(radius * rng.uniform(0.4, 0.65)))
        cv2.circle(mask, centre_px, outer, 1, -1)
        cv2.circle(mask, centre_px, min(inner, outer - 1), 0, -1)


def render_shapes_image(rng,
                        width,
                        height,
                        labels=None,
                        radius_range=RADIUS_RANGE,
                        margin=MARGIN):
    """Draw one image.

    Args:
        rng (np.random.Generator): The image's own generator.
        width (int): Image width.
        height (int): Image height.
        labels (Sequence[int], optional): The labels (indices of
            SHAPES_CLASSES) of the shapes to draw, in draw order. By
            default 1 to ``MAX_OBJECTS`` shapes of random labels, drawn
            from ``rng``.
        radius_range (tuple[float, float]): Range of a shape's outer
            radius, a fraction of the shorter image side. Defaults to
            ``RADIUS_RANGE``.
        margin (float): Least distance of a shape's centre from the image
            border, a fraction of its outer radius: 1 keeps every shape
            whole. Defaults to ``MARGIN``, which lets up to about 60 % of
            the radius leave the image.

    Returns:
        ShapesImage: The image, the owner map and every drawn shape's label
        and kept flag.
    """
    wanted = None if labels is None else [int(label) for label in labels]
    if wanted is not None and not all(0 <= label < len(SHAPES_CLASSES)
                                      for label in wanted):
        raise ValueError(f'labels are indices of SHAPES_CLASSES, 0 to '
                         f'{len(SHAPES_CLASSES) - 1}; got {labels}')
    canvas = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int16)
    # random: the count here, each label as its shape is drawn
    count = rng.integers(1, MAX_OBJECTS + 1) if wanted is None else len(wanted)
    labels, drawn_areas = [], []
    for index in range(count):
        if wanted is None:
            label = int(rng.integers(len(SHAPES_CLASSES)))
        else:
            label = wanted[index]
        radius = rng.uniform(*radius_range) * min(width, height)
        centre = rng.uniform(
            margin * radius,
            (width - margin * radius, height - margin * radius))
        mask = np.zeros((height, width), np.uint8)
        _draw_shape(mask, label, centre, radius, rng)
        ys, xs = np.nonzero(mask)
        box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        inside = mask[box].astype(bool)
        covered = canvas[box][inside].mean(0)
        for _ in range(10):  # redraw fills too close to what they cover
            fill = _texture(rng, *inside.shape)
            if np.linalg.norm(fill[inside].mean(0) - covered) >= MIN_CONTRAST:
                break
        canvas[box][inside] = fill[inside]
        owner[box][inside] = index
        labels.append(label)
        drawn_areas.append(len(ys))
    canvas += rng.normal(0, rng.uniform(0, 6), canvas.shape[:2] + (1, ))
    image = np.clip(canvas.round(), 0, 255).astype(np.uint8)
    min_area = max(MIN_AREA, MIN_AREA_FRACTION * width * height)
    areas = np.bincount(owner.ravel() + 1, minlength=len(labels) + 1)[1:]
    kept = tuple(
        bool(area >= min_area and area >= MIN_VISIBLE_FRACTION * drawn)
        for area, drawn in zip(areas.tolist(), drawn_areas))
    return ShapesImage(image, owner, tuple(labels), kept)


def _image_size(image_size):
    """``(width, height)`` from a side or a pair, checked."""
    if np.isscalar(image_size):
        image_size = (image_size, image_size)
    if len(image_size) != 2:
        raise ValueError(f'image_size is a side or (width, height), got '
                         f'{image_size}')
    width, height = image_size
    if min(width, height) < MIN_IMAGE_SIZE:
        raise ValueError(f'image_size must be at least {MIN_IMAGE_SIZE}, '
                         f'got {tuple(image_size)}')
    return int(width), int(height)


def _prepare_out_dir(out_dir, folders, overwrite):
    """Refuse a non-empty ``out_dir`` unless ``overwrite``, which deletes
    only ``folders`` in it; create ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            names = [f'{name}/' for name in folders]
            raise FileExistsError(
                f'{out_dir} is not empty; refusing to overwrite it. Pass '
                'overwrite=True (--overwrite) to replace its '
                f'{", ".join(names[:-1])} and {names[-1]} folders; nothing '
                'else in it is touched.')
        for name in folders:
            if (out_dir / name).exists():
                shutil.rmtree(out_dir / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


class SplitImages:
    """The images of one split, rendered while they are iterated.

    Args:
        split (str): ``'train'`` or ``'val'``.
        num (int): Number of images, ids 1 to ``num``.
        image_size (tuple[int, int]): ``(width, height)``.
        seed (int): The dataset seed.
        bar (rich.progress.Progress): Progress bar to advance.
        render (callable, optional): ``render(rng, image_id, width,
            height)`` returns the :class:`ShapesImage` of an image; by
            default :func:`render_shapes_image`.
    """

    def __init__(self, split, num, image_size, seed, bar, render=None):
        self.split = split
        self.num = num
        self.image_size = image_size
        self.seed = seed
        self._bar = bar
        self._render = render or (lambda rng, _, width, height:
                                  render_shapes_image(rng, width, height))

    def __iter__(self):
        """Yield ``(image_id, file_name, ShapesImage)``."""
        split_index = SPLITS.index(self.split)
        task = self._bar.add_task(f'{self.split} images', total=self.num)
        for image_id in range(1, self.num + 1):
            rng = np.random.default_rng([self.seed, split_index, image_id])
            yield image_id, f'{image_id:06d}.png', self._render(
                rng, image_id, *self.image_size)
            self._bar.advance(task)


def generate_shapes_dataset(write_split,
                            out_dir,
                            folders,
                            num_train,
                            num_val,
                            image_size,
                            seed,
                            overwrite,
                            progress,
                            render=None):
    """Check the arguments, prepare ``out_dir`` and write both splits.

    Args:
        write_split (callable): ``write_split(out_dir, images)`` writes
            the split of ``images`` (a :class:`SplitImages`) and returns a
            dict describing it.
        out_dir (str | Path): Output folder; refused when not empty unless
            ``overwrite``, which deletes only its ``folders``.
        folders (tuple[str]): The top-level folders the writer owns.
        num_train (int): Training images.
        num_val (int): Validation images.
        image_size (int | tuple[int, int]): Side, or ``(width, height)``,
            at least 32.
        seed (int): Non-negative seed; equal seeds write identical files.
        overwrite (bool): Replace an existing dataset.
        progress (bool): Show a progress bar.
        render (callable, optional): Renders the images, see
            :class:`SplitImages`; by default :func:`render_shapes_image`.

    Returns:
        dict: ``out_dir`` and, per split name, what ``write_split``
        returned.
    """
    image_size = _image_size(image_size)
    if min(num_train, num_val, seed) < 0:
        raise ValueError('num_train, num_val and seed must not be negative')
    out_dir = _prepare_out_dir(out_dir, folders, overwrite)
    result = dict(out_dir=str(out_dir))
    with Progress(disable=not progress) as bar:
        for split, num in zip(SPLITS, (num_train, num_val)):
            images = SplitImages(split, num, image_size, seed, bar, render)
            result[split] = write_split(out_dir, images)
    return result
