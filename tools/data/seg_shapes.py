"""A synthetic semantic segmentation dataset of coloured shapes.

The images are those of :mod:`.shapes`, the same files the COCO writer
(:mod:`.coco_shapes`) writes for the same seed and image size. A label map
is a single-channel ``uint8`` PNG of the image's size:

- 0: background;
- 1-6: the visible pixels of a kept shape, its index in SHAPES_CLASSES
  plus one (an index of SEG_SHAPES_CLASSES);
- 255 (``SEG_IGNORE_INDEX``, mmseg's default ``ignore_index``): the visible
  pixels of a shape too small to annotate, exactly the shapes the COCO
  writer leaves out.

Layout (mmseg's ``BaseSegDataset`` with ``img_suffix='.png'``,
``seg_map_suffix='.png'`` and ``reduce_zero_label=False`` reads it)::

    out_dir/img_dir/train/000001.png
    out_dir/img_dir/val/000001.png
    out_dir/ann_dir/train/000001.png  (label map of img_dir/train/000001.png)
    out_dir/ann_dir/val/000001.png
"""
import cv2
import numpy as np

from shapes import SHAPES_CLASSES, generate_shapes_dataset

SEG_SHAPES_CLASSES = ('background', ) + SHAPES_CLASSES
SEG_SHAPES_PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200),
                      (255, 225, 25), (240, 50, 230), (70, 240, 240))
SEG_IGNORE_INDEX = 255
FOLDERS = ('img_dir', 'ann_dir')


def shapes_label_map(shapes):
    """The semantic label map of a rendered image.

    Args:
        shapes (ShapesImage): A rendered image.

    Returns:
        np.ndarray: ``uint8`` labels, shape (H, W): 0 background, 1-6 kept
        shapes, ``SEG_IGNORE_INDEX`` shapes too small to annotate.
    """
    lookup = [
        label + 1 if keep else SEG_IGNORE_INDEX
        for label, keep in zip(shapes.labels, shapes.kept)
    ]
    # the background's owner, -1, picks the last entry
    return np.array(lookup + [0], np.uint8)[shapes.owner]


def _write_split(out_dir, images):
    """Write one split's images and label maps; return its counts."""
    img_dir = out_dir / 'img_dir' / images.split
    ann_dir = out_dir / 'ann_dir' / images.split
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    counts = np.zeros(256, np.int64)
    for _, file_name, shapes in images:
        label_map = shapes_label_map(shapes)
        cv2.imwrite(str(img_dir / file_name), shapes.image)
        cv2.imwrite(str(ann_dir / file_name), label_map)
        counts += np.bincount(label_map.ravel(), minlength=256)
    return dict(
        img_dir=str(img_dir),
        ann_dir=str(ann_dir),
        num_images=images.num,
        pixel_counts=dict(
            zip(SEG_SHAPES_CLASSES,
                counts[:len(SEG_SHAPES_CLASSES)].tolist())),
        ignore_pixels=int(counts[SEG_IGNORE_INDEX]))


def generate_seg_shapes(out_dir,
                        num_train=600,
                        num_val=100,
                        image_size=256,
                        seed=0,
                        overwrite=False,
                        progress=True):
    """Write the train and val splits of the semantic segmentation shapes.

    Args:
        out_dir (str | Path): Output folder; refused when not empty unless
            ``overwrite``, which deletes only its ``img_dir/`` and
            ``ann_dir/`` folders.
        num_train (int): Training images. Defaults to 600.
        num_val (int): Validation images. Defaults to 100.
        image_size (int | tuple[int, int]): Side, or ``(width, height)``,
            at least 32. Defaults to 256.
        seed (int): Non-negative seed; equal seeds write identical files.
        overwrite (bool): Replace an existing dataset. Defaults to False.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: ``out_dir``, ``classes``, ``palette`` and, per split,
        ``img_dir``, ``ann_dir``, ``num_images``, ``pixel_counts`` (class
        name to pixel count) and ``ignore_pixels``.
    """
    result = generate_shapes_dataset(_write_split, out_dir, FOLDERS, num_train,
                                     num_val, image_size, seed, overwrite,
                                     progress)
    return dict(result, classes=SEG_SHAPES_CLASSES, palette=SEG_SHAPES_PALETTE)
