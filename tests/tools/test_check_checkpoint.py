"""tools/analysis/check_checkpoint.py: an mmcls-format RedNet ImageNet
checkpoint against a classifier and a detector config."""
import subprocess
import sys
from pathlib import Path

import torch
from mmengine.config import Config

from mmplug_involution.apis import build_config_model

ROOT = Path(__file__).parents[2]
CLASSIFIER = (
    ROOT / 'configs' / 'rednet' / 'rednet50_32xb64-warmup-coslr_in1k.py')
DETECTOR = ROOT / 'configs' / 'rednet' / 'mask-rcnn_rednet50_fpn_1x_coco.py'


def _check(*args):
    return subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'analysis' / 'check_checkpoint.py'),
        *map(str, args)
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True)


def test_an_imagenet_checkpoint_fits_the_classifier_and_the_detector(tmp_path):
    checkpoint = tmp_path / 'rednet50_in1k.pth'
    classifier = build_config_model(Config.fromfile(str(CLASSIFIER)))
    torch.save(dict(state_dict=classifier.state_dict()), checkpoint)

    same = _check(CLASSIFIER, checkpoint)
    assert same.returncode == 0, same.stdout + same.stderr
    assert 'missing: 0' in same.stdout and 'shape mismatches: 0' in same.stdout

    # the detection stem's involution is 7x7 (98 kernel outputs), the
    # ImageNet one 3x3 (18): one head keeps its initialisation
    detector = _check(DETECTOR, checkpoint)
    assert detector.returncode == 1
    assert 'shape mismatches: 2' in detector.stdout
    assert ('stem.1.conv2.conv.weight: the model needs (98, 8, 1, 1), the '
            'checkpoint has (18, 8, 1, 1)') in detector.stdout
    assert 'missing: 0' in detector.stdout


def test_keys_under_another_prefix_and_bad_files_are_reported(tmp_path):
    bare = tmp_path / 'bare.pth'
    torch.save(dict(state_dict={'conv.weight': torch.zeros(1)}), bare)
    result = _check(CLASSIFIER, bare)
    assert result.returncode != 0
    assert "no key of" in result.stderr and "--prefix" in result.stderr
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    result = _check(CLASSIFIER, broken)
    assert result.returncode != 0 and 'corrupt' in result.stderr
    # loads, but what it holds is no state dict (keys that are not names)
    numbered = tmp_path / 'numbered.pth'
    torch.save({0: torch.zeros(1)}, numbered)
    result = _check(CLASSIFIER, numbered)
    assert result.returncode != 0
    assert f'{numbered} holds no state dict (it holds a dict)' in result.stderr
    assert 'Traceback' not in result.stderr
