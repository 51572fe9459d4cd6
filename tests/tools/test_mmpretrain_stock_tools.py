"""mmpretrain's own ``tools/train.py`` and ``tools/test.py`` (the ones its
package ships) train and test RedNet from a stock mmpretrain ResNet-50 config
whose backbone ``type`` is the only model edit, as a user's first edit would
be; the user's data settings point at a tiny folder dataset (ImageNet is not
here).
"""
import subprocess
import sys
from pathlib import Path

import cv2
import mmpretrain
import numpy as np
import pytest

from mmplug_involution.runtime import load_checkpoint_file

TOOLS = Path(mmpretrain.__file__).parent / '.mim' / 'tools'
USER_CONFIG = """_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']
custom_imports = dict(
    imports=['mmplug_involution', 'mmplug_involution.runtime'],
    allow_failed_imports=False)
runner_type = 'SafeCheckpointRunner'
model = dict(backbone=dict(type='RedNet'))
"""
#: the user's own data instead of ImageNet: one folder per class
DATA_CONFIG = """
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root='{root}',
                 data_prefix='train', pipeline={{{{_base_.train_pipeline}}}}))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root='{root}',
                 data_prefix='val', pipeline={{{{_base_.test_pipeline}}}}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""


def _folder_dataset(root: Path) -> None:
    """Two classes of two 64x64 images each, one folder per class."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for label in ('dark', 'light'):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(2):
                base = 40 if label == 'dark' else 200
                image = rng.integers(base - 30, base + 30, (64, 64, 3))
                cv2.imwrite(
                    str(folder / f'{index}.png'), image.astype(np.uint8))


def _run(tool: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(TOOLS / tool), *args],
        capture_output=True,
        text=True)
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_stock_mmpretrain_tools_train_and_test_rednet(tmp_path):
    _folder_dataset(tmp_path / 'data')
    config = tmp_path / 'rednet50_8xb32_in1k.py'
    config.write_text(USER_CONFIG + DATA_CONFIG.format(root=tmp_path / 'data'))
    work_dir = tmp_path / 'work'
    _run('train.py', str(config), '--work-dir', str(work_dir))
    checkpoint = work_dir / 'epoch_1.pth'
    state = load_checkpoint_file(str(checkpoint))['state_dict']
    # RedNet-50 (stem and bottleneck involutions) under mmpretrain's head
    assert state['backbone.stem.1.conv2.conv.weight'].shape == (98, 8, 1, 1)
    assert state['backbone.layer3.5.conv2.conv2.conv.weight'].shape == \
        (49 * 16, 64, 1, 1)
    assert state['head.fc.weight'].shape == (1000, 2048)

    tested = _run('test.py', str(config), str(checkpoint), '--work-dir',
                  str(tmp_path / 'test'))
    assert 'accuracy/top1:' in tested.stdout + tested.stderr
