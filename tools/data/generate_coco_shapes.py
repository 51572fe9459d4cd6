"""Write the synthetic COCO shapes instance segmentation dataset.

Writes ``OUT_DIR/annotations/instances_{train,val}.json`` and
``OUT_DIR/{train,val}/NNNNNN.png``; masks are exact COCO RLE. A non-empty
OUT_DIR is refused unless ``--overwrite``, which replaces only its
``annotations/``, ``train/`` and ``val/`` folders.

Example:
    python tools/data/generate_coco_shapes.py data/coco_shapes
    python tools/data/generate_coco_shapes.py data/coco_shapes --num-train 60 \
        --num-val 20 --image-size 128 --seed 1 --overwrite
"""
import argparse

from mmplug_involution.datasets import generate_coco_shapes


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='output folder')
    parser.add_argument(
        '--num-train', type=int, default=600, help='training images')
    parser.add_argument(
        '--num-val', type=int, default=100, help='validation images')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs='+',
        default=[256],
        help='image side, or width and height')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='non-negative seed; equal seeds, equal files')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace annotations/, train/ and val/ in a '
        'non-empty OUT_DIR')
    return parser.parse_args()


def main():
    args = parse_args()
    if len(args.image_size) not in (1, 2):
        raise SystemExit('--image-size takes one or two integers')
    width, height = (args.image_size * 2)[:2]
    try:
        result = generate_coco_shapes(
            args.out_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=(width, height),
            seed=args.seed,
            overwrite=args.overwrite)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f'error: {error}')
    print(f'classes: {", ".join(result["classes"])}')
    for split in ('train', 'val'):
        info = result[split]
        print(f'{split}: {info["num_images"]} images, '
              f'{info["num_instances"]} instances -> {info["ann_file"]}')


if __name__ == '__main__':
    main()
