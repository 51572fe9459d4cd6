"""A synthetic image classification dataset: one coloured shape an image.

Each image is drawn by :func:`.shapes.render_shapes_image`, on the same
textured backgrounds and with the same shape textures as the detection and
segmentation versions, but with exactly one shape, of a chosen class,
larger (outer radius ``CLS_RADIUS_RANGE`` of the shorter side) and whole
(``CLS_MARGIN``: a shape cut by the border can look like another class). Image
``i`` (from 1) of a split shows class ``(i - 1) % 6`` of
``CLS_SHAPES_CLASSES``, so the classes are balanced to within one image.
The output is a function of the seed and the image size alone.

The labels are the indices of ``CLS_SHAPES_CLASSES``, the shape names in
alphabetical order: the order in which mmpretrain's ``CustomDataset`` finds
the class folders when it scans them, so reading the folders alone (no
``ann_file``) and reading the annotation files give the same labels.

Layout (mmpretrain's ``CustomDataset`` reads a split with
``data_prefix='train'`` and ``ann_file='meta/train.txt'``, or by scanning
``train/`` without ``ann_file``)::

    out_dir/train/circle/000001.png  (file name = image id in the split)
    out_dir/train/ellipse/000002.png
    out_dir/val/circle/000001.png
    out_dir/meta/train.txt  ("circle/000001.png 0" a line, by image id)
    out_dir/meta/val.txt
    out_dir/meta/classes.txt  (one class name a line, by label; last)
"""
from pathlib import Path

import cv2

from shapes import SHAPES_CLASSES, generate_shapes_dataset, render_shapes_image

CLS_SHAPES_CLASSES = tuple(sorted(SHAPES_CLASSES))
CLS_RADIUS_RANGE = (0.3, 0.45)  # outer radius, fraction of the shorter side
CLS_MARGIN = 1.  # centre to border, fraction of the radius: the whole shape
FOLDERS = ('meta', 'train', 'val')


def render_cls_shapes_image(rng, image_id, width, height):
    """Draw image ``image_id`` of a split: one shape of its class.

    Args:
        rng (np.random.Generator): The image's own generator.
        image_id (int): The image's id in its split, from 1; it picks the
            class, ``CLS_SHAPES_CLASSES[(image_id - 1) % 6]``.
        width (int): Image width.
        height (int): Image height.

    Returns:
        ShapesImage: The image with its one shape; the label is an index of
        SHAPES_CLASSES (the renderer's), not of CLS_SHAPES_CLASSES. The
        shape is whole and large enough to annotate (kept): at the
        smallest size, 32x32, the smallest of 3000 covered 108
        pixels, ``MIN_AREA`` is 16.
    """
    name = CLS_SHAPES_CLASSES[(image_id - 1) % len(CLS_SHAPES_CLASSES)]
    return render_shapes_image(
        rng,
        width,
        height,
        labels=(SHAPES_CLASSES.index(name), ),
        radius_range=CLS_RADIUS_RANGE,
        margin=CLS_MARGIN)


def _write_split(out_dir, images):
    """Write one split's images and annotation file; return its counts."""
    split_dir = out_dir / images.split
    for name in CLS_SHAPES_CLASSES:
        (split_dir / name).mkdir(parents=True)
    lines, counts = [], dict.fromkeys(CLS_SHAPES_CLASSES, 0)
    for _, file_name, shapes in images:
        name = SHAPES_CLASSES[shapes.labels[0]]
        cv2.imwrite(str(split_dir / name / file_name), shapes.image)
        lines.append(f'{name}/{file_name} '
                     f'{CLS_SHAPES_CLASSES.index(name)}\n')
        counts[name] += 1
    ann_file = out_dir / 'meta' / f'{images.split}.txt'
    ann_file.parent.mkdir(exist_ok=True)
    ann_file.write_text(''.join(lines))
    return dict(
        img_dir=str(split_dir),
        ann_file=str(ann_file),
        num_images=images.num,
        class_counts=counts)


def generate_cls_shapes(out_dir,
                        num_train=1800,
                        num_val=300,
                        image_size=64,
                        seed=0,
                        overwrite=False,
                        progress=True):
    """Write the train and val splits of the classification shapes.

    Args:
        out_dir (str | Path): Output folder; refused when not empty unless
            ``overwrite``, which deletes only its ``meta/``, ``train/`` and
            ``val/`` folders.
        num_train (int): Training images. Defaults to 1800.
        num_val (int): Validation images. Defaults to 300.
        image_size (int | tuple[int, int]): Side, or ``(width, height)``,
            at least 32. Defaults to 64.
        seed (int): Non-negative seed; equal seeds write identical files.
        overwrite (bool): Replace an existing dataset. Defaults to False.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: ``out_dir``, ``classes`` (CLS_SHAPES_CLASSES), ``classes_file``
        and, per split, ``img_dir``, ``ann_file``, ``num_images`` and
        ``class_counts`` (class name to image count).
    """
    result = generate_shapes_dataset(_write_split, out_dir, FOLDERS, num_train,
                                     num_val, image_size, seed, overwrite,
                                     progress, render_cls_shapes_image)
    classes_file = Path(result['out_dir'], 'meta', 'classes.txt')
    classes_file.write_text(''.join(f'{name}\n'
                                    for name in CLS_SHAPES_CLASSES))
    return dict(
        result, classes=CLS_SHAPES_CLASSES, classes_file=str(classes_file))
