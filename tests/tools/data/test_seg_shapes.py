"""The synthetic semantic segmentation shapes: labels, seeds, mmseg."""
import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from ..common import tool_module
from .common import TOOL, read_files, run_tool_twice

shapes_module = tool_module('shapes', 'data')
seg_shapes = tool_module('seg_shapes', 'data')
SEG_IGNORE_INDEX = seg_shapes.SEG_IGNORE_INDEX
SEG_SHAPES_CLASSES = seg_shapes.SEG_SHAPES_CLASSES
SEG_SHAPES_PALETTE = seg_shapes.SEG_SHAPES_PALETTE
SHAPES_CLASSES = shapes_module.SHAPES_CLASSES
generate_coco_shapes = tool_module('coco_shapes', 'data').generate_coco_shapes
generate_seg_shapes = seg_shapes.generate_seg_shapes
render_shapes_image = shapes_module.render_shapes_image
shapes_label_map = seg_shapes.shapes_label_map

# width, height: not square, to catch swapped axes; small enough that both
# splits of seed 3 have ignore pixels (see test_ignore_pixels_occur)
SIZE = (64, 32)
SMALL = dict(num_train=8, num_val=3, image_size=SIZE, progress=False)
LABELS = set(range(len(SEG_SHAPES_CLASSES))) | {SEG_IGNORE_INDEX}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('seg_shapes')
    return generate_seg_shapes(out_dir, seed=3, **SMALL)


@pytest.fixture(scope='module')
def coco_dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('coco_shapes')
    return generate_coco_shapes(out_dir, seed=3, **SMALL)


def _label_map(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_classes_and_palette():
    assert SEG_SHAPES_CLASSES == ('background', ) + SHAPES_CLASSES
    assert len(SEG_SHAPES_PALETTE) == len(SEG_SHAPES_CLASSES)
    assert len(set(SEG_SHAPES_PALETTE)) == len(SEG_SHAPES_PALETTE)
    assert all(
        len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)
        for rgb in SEG_SHAPES_PALETTE)
    assert sum(SEG_SHAPES_PALETTE[0]) < 100  # background is dark


def test_returns_paths_and_counts(dataset):
    assert dataset['classes'] == SEG_SHAPES_CLASSES
    assert dataset['palette'] == SEG_SHAPES_PALETTE
    out_dir = Path(dataset['out_dir'])
    assert sorted(p.name for p in out_dir.iterdir()) == ['ann_dir', 'img_dir']
    for split, num in (('train', 8), ('val', 3)):
        info = dataset[split]
        assert info['img_dir'] == str(out_dir / 'img_dir' / split)
        assert info['ann_dir'] == str(out_dir / 'ann_dir' / split)
        assert info['num_images'] == num
        names = [f'{i:06d}.png' for i in range(1, num + 1)]
        counts = np.zeros(256, np.int64)
        for folder in (info['img_dir'], info['ann_dir']):
            assert sorted(p.name for p in Path(folder).iterdir()) == names
        for name in names:
            label_map = _label_map(Path(info['ann_dir']) / name)
            assert label_map.dtype == np.uint8
            assert label_map.shape == (32, 64)  # single channel
            assert set(np.unique(label_map).tolist()) <= LABELS
            counts += np.bincount(label_map.ravel(), minlength=256)
        assert list(info['pixel_counts']) == list(SEG_SHAPES_CLASSES)
        assert list(info['pixel_counts'].values()) == counts[:7].tolist()
        assert info['ignore_pixels'] == counts[SEG_IGNORE_INDEX]
        assert counts.sum() == num * 32 * 64
        assert counts[1:7].sum() > 0


@pytest.mark.parametrize('split', ['train', 'val'])
def test_matches_coco_dataset(dataset, coco_dataset, split):
    """Same images; labels 1-6 are exactly the COCO instance masks."""
    assert dataset[split]['ignore_pixels'] > 0  # dropped shapes are covered
    coco = COCO(coco_dataset[split]['ann_file'])
    for image_id in coco.getImgIds():
        name = coco.loadImgs(image_id)[0]['file_name']
        image = Path(dataset[split]['img_dir'], name).read_bytes()
        assert image == Path(coco_dataset[split]['img_dir'], name).read_bytes()
        label_map = _label_map(Path(dataset[split]['ann_dir']) / name)
        union = np.zeros(label_map.shape, bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(ann).astype(bool)
            assert (label_map[mask] == ann['category_id']).all()
            union |= mask
        np.testing.assert_array_equal((label_map >= 1) & (label_map <= 6),
                                      union)


def test_label_map_marks_dropped_shapes_ignore():
    found = 0
    for image_id in range(1, 41):
        shapes = render_shapes_image(
            np.random.default_rng([0, 0, image_id]), 32, 32)
        label_map = shapes_label_map(shapes)
        dropped = [i for i, keep in enumerate(shapes.kept) if not keep]
        np.testing.assert_array_equal(label_map == SEG_IGNORE_INDEX,
                                      np.isin(shapes.owner, dropped))
        np.testing.assert_array_equal(label_map == 0, shapes.owner == -1)
        found += len(dropped)
    assert found > 0


def test_ignore_pixels_occur(tmp_path):
    """At the smallest size, 32, a kept shape needs ``MIN_AREA`` = 16
    visible pixels while the smallest shapes are about 2 px in radius, so
    little occlusion drops one. Measured over 3000 images: 32 % of 32x32
    images have ignore pixels (7 % at 48x48, 4 % at 64x64), so 24 images
    of any seed all but surely do (0.68 ** 24 < 1e-3); seed 0 is fixed."""
    result = generate_seg_shapes(
        tmp_path, num_train=20, num_val=4, image_size=32, progress=False)
    ignored = [result[split]['ignore_pixels'] for split in ('train', 'val')]
    assert sum(ignored) > 0


def test_same_seed_sameread_files(dataset, tmp_path):
    generate_seg_shapes(tmp_path / 'again', seed=3, **SMALL)
    generate_seg_shapes(tmp_path / 'other', seed=4, **SMALL)
    first = read_files(dataset['out_dir'])
    again = read_files(tmp_path / 'again')
    other = read_files(tmp_path / 'other')
    assert len(first) == 2 * (8 + 3)
    assert again == first
    assert other.keys() == first.keys()
    for folder in ('img_dir', 'ann_dir'):
        name = Path(folder, 'val', '000001.png')
        assert other[name] != first[name]


def test_refuses_to_overwrite_and_keeps_userread_files(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    small = dict(SMALL, num_train=3, num_val=1)
    with pytest.raises(FileExistsError, match='not empty.*--overwrite'):
        generate_seg_shapes(tmp_path, **small)
    assert [p.name for p in tmp_path.iterdir()] == ['notes.txt']

    generate_seg_shapes(tmp_path, overwrite=True, **small)
    (tmp_path / 'ann_dir' / 'train' / 'extra.png').write_bytes(b'')
    (tmp_path / 'train').mkdir()  # a COCO split folder is not ours
    with pytest.raises(FileExistsError, match='img_dir/ and ann_dir/'):
        generate_seg_shapes(tmp_path, **small)
    result = generate_seg_shapes(
        tmp_path, overwrite=True, **dict(small, num_train=2))
    for folder in ('img_dir', 'ann_dir'):
        assert sorted(p.name
                      for p in (tmp_path / folder / 'train').iterdir()) == [
                          '000001.png', '000002.png'
                      ]
    assert result['train']['num_images'] == 2
    assert (tmp_path / 'notes.txt').read_text() == 'mine'
    assert (tmp_path / 'train').is_dir()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='at least 32'):
        generate_seg_shapes(tmp_path, **dict(SMALL, image_size=(32, 31)))
    with pytest.raises(ValueError, match='negative'):
        generate_seg_shapes(tmp_path, seed=-1, **SMALL)
    assert not any(tmp_path.iterdir())


def test_mmseg_base_seg_dataset_reads_it(dataset):
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    # no global default scope: other tests build from other registries
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg_dataset = DATASETS.build(
            dict(
                type='BaseSegDataset',
                data_root=dataset['out_dir'],
                metainfo=dict(
                    classes=SEG_SHAPES_CLASSES, palette=SEG_SHAPES_PALETTE),
                data_prefix=dict(
                    img_path='img_dir/train', seg_map_path='ann_dir/train'),
                img_suffix='.png',
                seg_map_suffix='.png',
                reduce_zero_label=False,
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations')
                ]))
        sample = seg_dataset[1]
    assert len(seg_dataset) == 8
    assert seg_dataset.metainfo['classes'] == SEG_SHAPES_CLASSES
    assert list(map(
        tuple, seg_dataset.metainfo['palette'])) == list(SEG_SHAPES_PALETTE)
    assert Path(sample['img_path']).name == '000002.png'
    name = Path(dataset['train']['ann_dir'], '000002.png')
    assert sample['seg_map_path'] == str(name)
    assert sample['img'].shape == (32, 64, 3)
    np.testing.assert_array_equal(
        sample['img'],
        cv2.imread(str(Path(dataset['train']['img_dir'], '000002.png'))))
    assert sample['gt_seg_map'].dtype == np.uint8
    np.testing.assert_array_equal(sample['gt_seg_map'], _label_map(name))


def test_cli(tmp_path):
    """The seg format; tests/tools/data/test_coco_shapes.py runs coco."""
    stdout = run_tool_twice('seg', tmp_path)
    assert 'classes: background, circle,' in stdout
    image = cv2.imread(str(tmp_path / 'img_dir' / 'val' / '000001.png'))
    assert image.shape == (48, 64, 3)
    label_map = _label_map(tmp_path / 'ann_dir' / 'val' / '000001.png')
    assert label_map.shape == (48, 64)
    assert set(np.unique(label_map).tolist()) <= LABELS


def test_cli_rejects_bad_image_size(tmp_path, monkeypatch, capsys):
    """Checked in-process: a subprocess pays seconds of imports."""
    spec = importlib.util.spec_from_file_location('generate_shapes', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(
        sys, 'argv',
        [str(TOOL), 'seg',
         str(tmp_path), '--image-size', '64', '48', '32'])
    with pytest.raises(SystemExit) as exit_info:
        tool.main()
    assert exit_info.value.code == 2
    assert 'error: --image-size takes one or two' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
