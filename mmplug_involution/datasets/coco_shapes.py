"""A synthetic COCO-format instance segmentation dataset of coloured shapes.

Every image has a textured background (solid, gradient, noise or random
lines) and 1-6 shapes of varied size, colour and texture (solid, stripes,
noise, gradient); later shapes occlude earlier ones. An annotation describes
the visible part of its shape: ``segmentation`` is the exact mask as COCO
compressed RLE (read by pycocotools and by mmdet's ``LoadAnnotations`` with
its default ``poly2mask=True``), ``area`` its pixel count and ``bbox`` its
tight box (``x, y, w, h``). Shapes whose visible part is too small are left
out. The output is a function of the seed alone: every image draws from its
own ``numpy.random.Generator`` seeded with ``(seed, split, index)``.

Layout::

    out_dir/annotations/instances_train.json
    out_dir/annotations/instances_val.json
    out_dir/train/000001.png  (file name = image id)
    out_dir/val/000001.png
"""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from rich.progress import Progress

SHAPES_CLASSES = ('circle', 'rectangle', 'triangle', 'star', 'ellipse', 'ring')
SPLITS = ('train', 'val')
MAX_OBJECTS = 6
RADIUS_RANGE = (0.07, 0.22)  # outer radius, fraction of the shorter side
MIN_AREA = 16  # visible pixels an annotated shape keeps, at least ...
MIN_AREA_FRACTION = 0.0015  # ... and this fraction of the image
MIN_VISIBLE_FRACTION = 0.2  # and of the shape's own drawn area
MIN_CONTRAST = 60.  # colour distance of a shape to what it covers
MIN_IMAGE_SIZE = 32


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
    else:  # ring
        cv2.circle(mask, centre_px, int(round(radius)), 1, -1)
        cv2.circle(mask, centre_px,
                   int(round(radius * rng.uniform(0.4, 0.65))), 0, -1)


def _annotation(visible, label, image_id, ann_id):
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    ys, xs = np.nonzero(visible)
    x0, y0 = int(xs.min()), int(ys.min())
    width, height = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=label + 1,
        segmentation=dict(
            size=rle['size'], counts=rle['counts'].decode('ascii')),
        area=len(xs),
        bbox=[x0, y0, width, height],
        iscrowd=0)


def _render_image(rng, width, height):
    """Draw one image.

    Returns:
        tuple: the BGR ``uint8`` image and a list of ``(label, visible
        mask)`` of the annotated shapes, ``label`` indexing SHAPES_CLASSES.
    """
    canvas = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int16)
    drawn = []
    for index in range(rng.integers(1, MAX_OBJECTS + 1)):
        label = int(rng.integers(len(SHAPES_CLASSES)))
        radius = rng.uniform(*RADIUS_RANGE) * min(width, height)
        # at most about 60 % of the radius may leave the image
        centre = rng.uniform(0.4 * radius,
                             (width - 0.4 * radius, height - 0.4 * radius))
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
        drawn.append((label, len(ys)))
    canvas += rng.normal(0, rng.uniform(0, 6), canvas.shape[:2] + (1, ))
    image = np.clip(canvas.round(), 0, 255).astype(np.uint8)
    min_area = max(MIN_AREA, MIN_AREA_FRACTION * width * height)
    objects = []
    for index, (label, drawn_area) in enumerate(drawn):
        visible = owner == index
        area = int(visible.sum())
        if area >= min_area and area >= MIN_VISIBLE_FRACTION * drawn_area:
            objects.append((label, visible))
    return image, objects


def _prepare_out_dir(out_dir, overwrite):
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f'{out_dir} is not empty; refusing to overwrite it. Pass '
                'overwrite=True (--overwrite) to replace its annotations/, '
                'train/ and val/ folders; nothing else in it is touched.')
        for name in ('annotations', ) + SPLITS:
            if (out_dir / name).exists():
                shutil.rmtree(out_dir / name)
    (out_dir / 'annotations').mkdir(parents=True, exist_ok=True)


def _write_split(out_dir, split, num, image_size, seed, bar):
    """Write one split's images and annotation file; return its counts."""
    split_index = SPLITS.index(split)
    width, height = image_size
    img_dir = out_dir / split
    img_dir.mkdir()
    task = bar.add_task(f'{split} images', total=num)
    images, annotations = [], []
    for image_id in range(1, num + 1):
        rng = np.random.default_rng([seed, split_index, image_id])
        image, objects = _render_image(rng, width, height)
        file_name = f'{image_id:06d}.png'
        cv2.imwrite(str(img_dir / file_name), image)
        images.append(
            dict(id=image_id, file_name=file_name, width=width, height=height))
        for label, visible in objects:
            ann_id = len(annotations) + 1
            annotations.append(_annotation(visible, label, image_id, ann_id))
        bar.advance(task)
    coco = dict(
        info=dict(
            description='mmplug_involution synthetic shapes',
            split=split,
            seed=seed,
            image_size=[width, height]),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name, supercategory='shape')
            for i, name in enumerate(SHAPES_CLASSES)
        ])
    ann_file = out_dir / 'annotations' / f'instances_{split}.json'
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return dict(
        ann_file=str(ann_file),
        img_dir=str(img_dir),
        num_images=num,
        num_instances=len(annotations))


def generate_coco_shapes(out_dir,
                         num_train=600,
                         num_val=100,
                         image_size=256,
                         seed=0,
                         overwrite=False,
                         progress=True):
    """Write the train and val splits of the shapes dataset.

    Args:
        out_dir (str | Path): Output folder; refused when not empty unless
            ``overwrite``, which deletes only its ``annotations/``,
            ``train/`` and ``val/`` folders.
        num_train (int): Training images. Defaults to 600.
        num_val (int): Validation images. Defaults to 100.
        image_size (int | tuple[int, int]): Side, or ``(width, height)``,
            at least 32. Defaults to 256.
        seed (int): Non-negative seed; equal seeds write identical files.
        overwrite (bool): Replace an existing dataset. Defaults to False.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: ``out_dir``, ``classes`` and, per split, ``ann_file``,
        ``img_dir``, ``num_images`` and ``num_instances``.
    """
    if np.isscalar(image_size):
        image_size = (image_size, image_size)
    if min(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f'image_size must be at least {MIN_IMAGE_SIZE}, '
                         f'got {image_size}')
    if min(num_train, num_val, seed) < 0:
        raise ValueError('num_train, num_val and seed must not be negative')
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    result = dict(out_dir=str(out_dir), classes=SHAPES_CLASSES)
    with Progress(disable=not progress) as bar:
        for split, num in zip(SPLITS, (num_train, num_val)):
            result[split] = _write_split(out_dir, split, num, image_size, seed,
                                         bar)
    return result
