"""The synthetic classification shapes: layout, balance, seeds, mmpretrain."""
import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ..common import tool_module
from .common import TOOL, read_files, run_tool_twice

shapes_module = tool_module('shapes', 'data')
cls_shapes = tool_module('cls_shapes', 'data')
CLS_SHAPES_CLASSES = cls_shapes.CLS_SHAPES_CLASSES
SHAPES_CLASSES = shapes_module.SHAPES_CLASSES
generate_cls_shapes = cls_shapes.generate_cls_shapes
render_cls_shapes_image = cls_shapes.render_cls_shapes_image
render_shapes_image = shapes_module.render_shapes_image

# width, height: not square, to catch swapped axes
SIZE = (48, 40)
# 14 and 7: neither a multiple of the six classes
SMALL = dict(num_train=14, num_val=7, image_size=SIZE, progress=False)
SPLITS = (('train', 14), ('val', 7))


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('cls_shapes')
    return generate_cls_shapes(out_dir, seed=3, **SMALL)


def _lines(ann_file):
    """``[(relative path, label)]`` of an annotation list."""
    return [(path, int(label)) for path, label in (
        line.rsplit(' ', 1)
        for line in Path(ann_file).read_text().splitlines())]


def test_classes_are_the_shapes_in_alphabetical_order():
    assert CLS_SHAPES_CLASSES == tuple(sorted(SHAPES_CLASSES))
    assert len(CLS_SHAPES_CLASSES) == 6


def test_layout_and_annotation_lists(dataset):
    out_dir = Path(dataset['out_dir'])
    assert dataset['classes'] == CLS_SHAPES_CLASSES
    assert sorted(p.name
                  for p in out_dir.iterdir()) == ['meta', 'train', 'val']
    assert dataset['classes_file'] == str(out_dir / 'meta' / 'classes.txt')
    assert Path(dataset['classes_file']).read_text().splitlines() == list(
        CLS_SHAPES_CLASSES)
    assert sorted(p.name for p in (out_dir / 'meta').iterdir()) == [
        'classes.txt', 'train.txt', 'val.txt'
    ]
    for split, num in SPLITS:
        info = dataset[split]
        assert info['img_dir'] == str(out_dir / split)
        assert info['ann_file'] == str(out_dir / 'meta' / f'{split}.txt')
        assert info['num_images'] == num
        # a folder per class, even a class without images
        assert sorted(p.name for p in Path(info['img_dir']).iterdir()) == \
            list(CLS_SHAPES_CLASSES)
        files = sorted(
            p.relative_to(info['img_dir']).as_posix()
            for p in Path(info['img_dir']).rglob('*') if p.is_file())
        lines = _lines(info['ann_file'])
        # by image id, each file once, labelled by its folder
        assert [path.split('/')[1] for path, _ in lines
                ] == [f'{i:06d}.png' for i in range(1, num + 1)]
        assert sorted(path for path, _ in lines) == files
        for path, label in lines:
            assert CLS_SHAPES_CLASSES[label] == path.split('/')[0]
            image = cv2.imread(str(Path(info['img_dir']) / path))
            assert image.shape == (40, 48, 3)


def test_classes_are_balanced_and_take_turns(dataset):
    for split, num in SPLITS:
        labels = [label for _, label in _lines(dataset[split]['ann_file'])]
        assert labels == [i % 6 for i in range(num)]
        counts = dataset[split]['class_counts']
        assert list(counts) == list(CLS_SHAPES_CLASSES)
        assert list(counts.values()) == np.bincount(
            labels, minlength=6).tolist()
        assert sum(counts.values()) == num
        assert max(counts.values()) - min(counts.values()) <= 1
    assert list(dataset['val']['class_counts'].values()) == [2] + [1] * 5


def test_one_shape_an_image(dataset):
    """Each file is the render of its id: one kept shape, of the folder's
    class, large enough to make out."""
    for split_index, (split, num) in enumerate(SPLITS):
        for path, label in _lines(dataset[split]['ann_file']):
            image_id = int(Path(path).stem)
            rng = np.random.default_rng([3, split_index, image_id])
            shapes = render_cls_shapes_image(rng, image_id, *SIZE)
            assert shapes.labels == (SHAPES_CLASSES.index(
                CLS_SHAPES_CLASSES[label]), )
            assert shapes.kept == (True, )
            assert set(np.unique(shapes.owner).tolist()) == {-1, 0}
            assert (shapes.owner == 0).sum() >= shapes_module.MIN_AREA
            written = cv2.imread(str(Path(dataset[split]['img_dir']) / path))
            np.testing.assert_array_equal(written, shapes.image)


@pytest.mark.parametrize('side', [32, 64])
def test_the_shape_is_large_whole_and_kept(side):
    """The outer radius is 30-45 % of the shorter side (7-22 % in the other
    datasets) and the centre at least a radius from the border: at 64 px
    the smallest of 3000 shapes covered 409 pixels, the median 1026; at the
    smallest size, 32, every shape is still kept."""
    areas = []
    for image_id in range(1, 121):
        rng = np.random.default_rng([0, 0, image_id])
        shapes = render_cls_shapes_image(rng, image_id, side, side)
        assert shapes.kept == (True, )
        areas.append(int((shapes.owner == 0).sum()))
    assert min(areas) >= shapes_module.MIN_AREA
    if side == 64:
        assert min(areas) >= 300
        assert np.median(areas) >= 800


def test_margin_one_keeps_shapes_whole():
    """With ``margin=1`` (the classification images') no circle is cut by
    the border: its mask spans its diameter both ways; with the default
    margin, some are cut."""
    spans = {}
    for margin in (1., shapes_module.MARGIN):
        spans[margin] = []
        for seed in range(30):
            shapes = render_shapes_image(
                np.random.default_rng(seed),
                64,
                64,
                labels=(0, ),
                radius_range=(0.45, 0.45),
                margin=margin)
            ys, xs = np.nonzero(shapes.owner == 0)
            spans[margin].append(min(np.ptp(ys), np.ptp(xs)) + 1)
    diameter = 2 * 0.45 * 64
    assert min(spans[1.]) >= diameter - 1
    assert min(spans[shapes_module.MARGIN]) < diameter - 10


def test_render_shapes_image_takes_chosen_labels():
    rng = np.random.default_rng(0)
    shapes = render_shapes_image(rng, 64, 64, labels=(5, 0, 3))
    assert shapes.labels == (5, 0, 3)
    assert len(shapes.kept) == 3
    with pytest.raises(ValueError, match='indices of SHAPES_CLASSES'):
        render_shapes_image(rng, 64, 64, labels=(6, ))
    with pytest.raises(ValueError, match='indices of SHAPES_CLASSES'):
        render_shapes_image(rng, 64, 64, labels=(-1, ))


def test_same_seed_same_files(dataset, tmp_path):
    generate_cls_shapes(tmp_path / 'again', seed=3, **SMALL)
    generate_cls_shapes(tmp_path / 'other', seed=4, **SMALL)
    first = read_files(dataset['out_dir'])
    again = read_files(tmp_path / 'again')
    other = read_files(tmp_path / 'other')
    assert len(first) == 14 + 7 + 3
    assert again == first
    # same names and labels, other pictures
    assert other.keys() == first.keys()
    name = Path('val', 'circle', '000001.png')
    assert other[name] != first[name]
    assert other[Path('meta', 'val.txt')] == first[Path('meta', 'val.txt')]


def test_refuses_to_overwrite_and_keeps_user_files(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    small = dict(SMALL, num_train=3, num_val=1)
    with pytest.raises(FileExistsError, match='not empty.*--overwrite'):
        generate_cls_shapes(tmp_path, **small)
    assert [p.name for p in tmp_path.iterdir()] == ['notes.txt']

    generate_cls_shapes(tmp_path, overwrite=True, **small)
    (tmp_path / 'train' / 'star' / 'extra.png').write_bytes(b'')
    (tmp_path / 'img_dir').mkdir()  # a seg folder is not ours
    with pytest.raises(FileExistsError, match='meta/, train/ and val/'):
        generate_cls_shapes(tmp_path, **small)
    result = generate_cls_shapes(
        tmp_path, overwrite=True, **dict(small, num_train=2))
    assert sorted(
        p.relative_to(tmp_path / 'train').as_posix()
        for p in (tmp_path / 'train').rglob('*.png')) == [
            'circle/000001.png', 'ellipse/000002.png'
        ]
    assert result['train']['num_images'] == 2
    assert (tmp_path / 'notes.txt').read_text() == 'mine'
    assert (tmp_path / 'img_dir').is_dir()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='at least 32'):
        generate_cls_shapes(tmp_path, **dict(SMALL, image_size=(31, 64)))
    with pytest.raises(ValueError, match='side or'):
        generate_cls_shapes(tmp_path, **dict(SMALL, image_size=(64, 64, 3)))
    for bad in (dict(seed=-1), dict(num_train=-1), dict(num_val=-2)):
        with pytest.raises(ValueError, match='negative'):
            generate_cls_shapes(tmp_path, **dict(SMALL, **bad))
    assert not any(tmp_path.iterdir())


def test_mmpretrain_custom_dataset_reads_it(dataset):
    """With the annotation list or by scanning the class folders: the same
    images, labels and classes."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    from mmpretrain.utils import register_all_modules

    # no global default scope: other tests build from other registries
    register_all_modules(init_default_scope=False)
    common = dict(
        type='CustomDataset',
        data_root=dataset['out_dir'],
        data_prefix='train',
        pipeline=[dict(type='LoadImageFromFile')])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        listed = DATASETS.build(
            dict(
                common,
                ann_file='meta/train.txt',
                classes=dataset['classes_file']))
        scanned = DATASETS.build(common)
        sample = listed[7]
    assert len(listed) == len(scanned) == 14
    assert listed.metainfo['classes'] == CLS_SHAPES_CLASSES
    assert scanned.metainfo['classes'] == CLS_SHAPES_CLASSES

    def samples(data):
        return sorted((info['img_path'], info['gt_label'])
                      for info in data.load_data_list())

    assert samples(listed) == samples(scanned)
    path = Path(dataset['train']['img_dir'], 'ellipse', '000008.png')
    assert sample['img_path'] == str(path)
    assert sample['gt_label'] == 1
    assert sample['img'].shape == (40, 48, 3)
    np.testing.assert_array_equal(sample['img'], cv2.imread(str(path)))


def test_cli(tmp_path):
    """The cls format; the other tests of this folder run coco and seg."""
    stdout = run_tool_twice('cls', tmp_path)
    assert 'classes: circle, ellipse, rectangle, ring, star, triangle' in \
        stdout
    assert 'train: 2 images, 0-1 a class' in stdout
    image = cv2.imread(str(tmp_path / 'val' / 'circle' / '000001.png'))
    assert image.shape == (48, 64, 3)
    assert (tmp_path / 'meta' / 'val.txt').read_text() == \
        'circle/000001.png 0\n'


def _tool():
    """tools/data/generate_shapes.py as a module, in-process: a subprocess
    pays seconds of imports."""
    spec = importlib.util.spec_from_file_location('generate_shapes', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_cli_defaults_are_the_formats_own(tmp_path, monkeypatch, capsys):
    """Without --image-size, cls writes 64 px images (coco and seg 256)."""
    monkeypatch.setattr(sys, 'argv', [
        str(TOOL), 'cls',
        str(tmp_path), '--num-train', '6', '--num-val', '0', '--seed', '1'
    ])
    _tool().main()
    out = capsys.readouterr().out
    assert 'train: 6 images, 1 a class' in out
    assert 'val: 0 images' in out
    image = cv2.imread(str(tmp_path / 'train' / 'ring' / '000004.png'))
    assert image.shape == (64, 64, 3)


def test_cli_refuses_bad_arguments_clearly(tmp_path, monkeypatch, capsys):
    tool = _tool()
    for args, message in (
        (['--image-size', '64', '48', '32'], 'takes one or two'),
        (['--image-size', '16'], 'must be at least 32'),
        (['--num-train', '-3'], 'must not be negative'),
    ):
        monkeypatch.setattr(
            sys, 'argv',
            [str(TOOL), 'cls', str(tmp_path), *args])
        with pytest.raises(SystemExit) as exit_info:
            tool.main()
        err = capsys.readouterr().err + str(exit_info.value.code)
        assert exit_info.value.code != 0
        assert 'error:' in err and message in err
        assert 'Traceback' not in err
    assert not any(tmp_path.iterdir())
