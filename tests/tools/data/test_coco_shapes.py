"""The synthetic COCO shapes dataset: exact annotations, seeds, safety."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from ..common import tool_module
from .common import read_files, run_tool_twice

SHAPES_CLASSES = tool_module('shapes', 'data').SHAPES_CLASSES
generate_coco_shapes = tool_module('coco_shapes', 'data').generate_coco_shapes

SMALL = dict(num_train=12, num_val=4, image_size=96, progress=False)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('shapes')
    return generate_coco_shapes(out_dir, seed=3, **SMALL)


def test_returns_paths_and_counts(dataset):
    assert dataset['classes'] == SHAPES_CLASSES
    assert len(SHAPES_CLASSES) >= 4
    out_dir = Path(dataset['out_dir'])
    for split, num in (('train', 12), ('val', 4)):
        info = dataset[split]
        assert info['ann_file'] == str(out_dir / 'annotations' /
                                       f'instances_{split}.json')
        assert info['img_dir'] == str(out_dir / split)
        assert info['num_images'] == num
        assert sorted(p.name for p in Path(info['img_dir']).iterdir()) == [
            f'{i:06d}.png' for i in range(1, num + 1)
        ]


@pytest.mark.parametrize('split', ['train', 'val'])
def test_annotations_are_exact(dataset, split):
    coco = COCO(dataset[split]['ann_file'])
    categories = coco.loadCats(coco.getCatIds())
    assert [(c['id'], c['name'])
            for c in categories] == list(enumerate(SHAPES_CLASSES, 1))
    assert len(coco.getAnnIds()) == dataset[split]['num_instances']
    assert len(coco.getAnnIds()) >= dataset[split]['num_images']
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        image = cv2.imread(
            str(Path(dataset[split]['img_dir']) / info['file_name']))
        assert (info['width'], info['height']) == (96, 96)
        assert image.shape == (96, 96, 3)
        cover = np.zeros((96, 96), np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(ann)
            ys, xs = np.nonzero(mask)
            x0, y0 = xs.min(), ys.min()
            width, height = xs.max() - x0 + 1, ys.max() - y0 + 1
            assert mask.sum() == ann['area'] > 0
            assert ann['bbox'] == [x0, y0, width, height]  # tight, xywh
            assert ann['iscrowd'] == 0
            assert 1 <= ann['category_id'] <= len(SHAPES_CLASSES)
            cover += mask
        assert cover.max() <= 1  # visible parts never overlap


def test_same_seed_sameread_files(dataset, tmp_path):
    generate_coco_shapes(tmp_path / 'again', seed=3, **SMALL)
    generate_coco_shapes(tmp_path / 'other', seed=4, **SMALL)
    first = read_files(dataset['out_dir'])
    again = read_files(tmp_path / 'again')
    other = read_files(tmp_path / 'other')
    assert len(first) == 12 + 4 + 2
    assert again == first
    assert other.keys() == first.keys()
    ann_file = Path('annotations', 'instances_train.json')
    assert other[ann_file] != first[ann_file]
    assert other[Path('val', '000001.png')] != first[Path('val', '000001.png')]


def test_refuses_to_overwrite_and_keeps_userread_files(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    small = dict(SMALL, num_train=3, num_val=1)
    with pytest.raises(FileExistsError, match='not empty.*--overwrite'):
        generate_coco_shapes(tmp_path, **small)
    assert [p.name for p in tmp_path.iterdir()] == ['notes.txt']

    generate_coco_shapes(tmp_path, overwrite=True, **small)
    (tmp_path / 'train' / 'extra.png').write_bytes(b'')
    (tmp_path / 'mine').mkdir()
    with pytest.raises(FileExistsError):
        generate_coco_shapes(tmp_path, **small)
    result = generate_coco_shapes(
        tmp_path, overwrite=True, **dict(small, num_train=2))
    assert sorted(p.name for p in (tmp_path / 'train').iterdir()) == [
        '000001.png', '000002.png'
    ]
    assert result['train']['num_images'] == 2
    assert (tmp_path / 'notes.txt').read_text() == 'mine'
    assert (tmp_path / 'mine').is_dir()


def test_rejects_tiny_images(tmp_path):
    with pytest.raises(ValueError, match='at least 32'):
        generate_coco_shapes(tmp_path, **dict(SMALL, image_size=16))


def test_mmdet_coco_dataset_reads_masks(dataset):
    from mmdet.datasets import CocoDataset
    from mmdet.structures.mask import BitmapMasks
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        coco_dataset = CocoDataset(
            data_root=dataset['out_dir'],
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'),
            metainfo=dict(classes=SHAPES_CLASSES),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
            ])
    assert len(coco_dataset) == 12
    coco = COCO(dataset['train']['ann_file'])
    sample = coco_dataset[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=sample['img_id']))
    assert sample['img'].shape == (96, 96, 3)
    assert isinstance(sample['gt_masks'], BitmapMasks)
    np.testing.assert_array_equal(sample['gt_masks'].to_ndarray(),
                                  np.stack([coco.annToMask(a) for a in anns]))
    np.testing.assert_array_equal(sample['gt_bboxes'].tensor.numpy(),
                                  [[x, y, x + w, y + h]
                                   for x, y, w, h in (a['bbox']
                                                      for a in anns)])
    np.testing.assert_array_equal(sample['gt_bboxes_labels'],
                                  [a['category_id'] - 1 for a in anns])


def test_cli(tmp_path):
    stdout = run_tool_twice('coco', tmp_path)
    assert 'instances ->' in stdout
    image = cv2.imread(str(tmp_path / 'val' / '000001.png'))
    assert image.shape == (48, 64, 3)
