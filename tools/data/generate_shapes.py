"""Write a synthetic shapes dataset: instance or semantic segmentation, or
image classification.

``coco`` writes ``OUT_DIR/annotations/instances_{train,val}.json`` and
``OUT_DIR/{train,val}/NNNNNN.png`` (masks are exact COCO RLE); ``seg`` writes
``OUT_DIR/img_dir/{train,val}/NNNNNN.png`` and the label maps
``OUT_DIR/ann_dir/{train,val}/NNNNNN.png`` (0 background, 1-6 the shapes,
255 ignore). Both formats share the images of a seed and size. ``cls``
writes images of one shape each into a folder per class,
``OUT_DIR/{train,val}/CLASS/NNNNNN.png``, with the lists
``OUT_DIR/meta/{train,val}.txt`` ("CLASS/NNNNNN.png LABEL") and
``OUT_DIR/meta/classes.txt`` (mmpretrain's ``CustomDataset`` reads it). A
non-empty OUT_DIR is refused unless ``--overwrite``, which replaces only the
format's own folders. See docs/datasets.md.

Example:
    python tools/data/generate_shapes.py coco data/coco_shapes
    python tools/data/generate_shapes.py seg data/seg_shapes --num-train 60 \
        --num-val 20 --image-size 128 --seed 1 --overwrite
    python tools/data/generate_shapes.py cls data/cls_shapes
"""
import argparse

from cls_shapes import generate_cls_shapes
from coco_shapes import generate_coco_shapes
from seg_shapes import generate_seg_shapes

GENERATORS = dict(
    coco=generate_coco_shapes,
    seg=generate_seg_shapes,
    cls=generate_cls_shapes)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'format',
        choices=sorted(GENERATORS),
        help='coco: instance segmentation (COCO json); seg: semantic '
        'segmentation (PNG label maps); cls: image classification (a '
        'folder per class)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='output folder')
    parser.add_argument(
        '--num-train',
        type=int,
        help='training images (default: 600; cls: 1800)')
    parser.add_argument(
        '--num-val',
        type=int,
        help='validation images (default: 100; cls: 300)')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs='+',
        help='image side, or width and height (default: 256; cls: 64)')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='non-negative seed; equal seeds, equal files')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help="replace the format's folders in a non-empty OUT_DIR")
    args = parser.parse_args()
    if args.image_size is not None and len(args.image_size) not in (1, 2):
        parser.error('--image-size takes one or two integers')
    return args


def _summary(split, info):
    """One line about a written split."""
    if 'class_counts' in info:
        counts = set(info['class_counts'].values())
        each = '-'.join(map(str, sorted(counts)))
        return (f'{split}: {info["num_images"]} images, {each} a class -> '
                f'{info["img_dir"]}, {info["ann_file"]}')
    if 'ann_file' in info:
        return (f'{split}: {info["num_images"]} images, '
                f'{info["num_instances"]} instances -> {info["ann_file"]}')
    return (f'{split}: {info["num_images"]} images, '
            f'{info["ignore_pixels"]} ignore pixels -> {info["img_dir"]}, '
            f'{info["ann_dir"]}')


def main():
    args = parse_args()
    # the options left out take the format's own defaults
    given = dict(num_train=args.num_train, num_val=args.num_val)
    if args.image_size is not None:
        given['image_size'] = tuple((args.image_size * 2)[:2])
    given = {key: value for key, value in given.items() if value is not None}
    try:
        result = GENERATORS[args.format](
            args.out_dir, seed=args.seed, overwrite=args.overwrite, **given)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f'error: {error}')
    print(f'classes: {", ".join(result["classes"])}')
    for split in ('train', 'val'):
        print(_summary(split, result[split]))


if __name__ == '__main__':
    main()
