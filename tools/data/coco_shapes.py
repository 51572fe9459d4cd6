"""A synthetic COCO-format instance segmentation dataset of coloured shapes.

The images are those of :mod:`.shapes` (shared with the semantic
segmentation version, :mod:`.seg_shapes`). An annotation describes the
visible part of a kept shape: ``segmentation`` is the exact mask as COCO
compressed RLE (read by pycocotools and by mmdet's ``LoadAnnotations`` with
its default ``poly2mask=True``), ``area`` its pixel count and ``bbox`` its
tight box (``x, y, w, h``). Shapes whose visible part is too small are left
out. The output is a function of the seed and the image size alone.

Layout::

    out_dir/annotations/instances_train.json
    out_dir/annotations/instances_val.json
    out_dir/train/000001.png  (file name = image id)
    out_dir/val/000001.png
"""
import json

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from shapes import SHAPES_CLASSES, generate_shapes_dataset

FOLDERS = ('annotations', 'train', 'val')


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


def _write_split(out_dir, images):
    """Write one split's images and annotation file; return its counts."""
    split = images.split
    width, height = images.image_size
    img_dir = out_dir / split
    img_dir.mkdir()
    coco_images, annotations = [], []
    for image_id, file_name, shapes in images:
        cv2.imwrite(str(img_dir / file_name), shapes.image)
        coco_images.append(
            dict(id=image_id, file_name=file_name, width=width, height=height))
        for label, visible in shapes.objects:
            ann_id = len(annotations) + 1
            annotations.append(_annotation(visible, label, image_id, ann_id))
    coco = dict(
        info=dict(
            description='mmplug_involution synthetic shapes',
            split=split,
            seed=images.seed,
            image_size=[width, height]),
        images=coco_images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name, supercategory='shape')
            for i, name in enumerate(SHAPES_CLASSES)
        ])
    ann_dir = out_dir / 'annotations'
    ann_dir.mkdir(exist_ok=True)
    ann_file = ann_dir / f'instances_{split}.json'
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return dict(
        ann_file=str(ann_file),
        img_dir=str(img_dir),
        num_images=images.num,
        num_instances=len(annotations))


def generate_coco_shapes(out_dir,
                         num_train=600,
                         num_val=100,
                         image_size=256,
                         seed=0,
                         overwrite=False,
                         progress=True):
    """Write the train and val splits of the COCO shapes dataset.

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
    result = generate_shapes_dataset(_write_split, out_dir, FOLDERS, num_train,
                                     num_val, image_size, seed, overwrite,
                                     progress)
    return dict(result, classes=SHAPES_CLASSES)
