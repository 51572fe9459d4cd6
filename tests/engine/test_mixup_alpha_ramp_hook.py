"""MixupAlphaRampHook: mixup's alpha grows from 0, as the DCD authors'."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub
from mmpretrain.models import ClsDataPreprocessor, LabelSmoothLoss
from mmpretrain.structures import DataSample

from mmplug_involution.engine import MixupAlphaRampHook


def _runner(augments):
    preprocessor = ClsDataPreprocessor(
        num_classes=5, batch_augments=augments and dict(augments=augments))
    return SimpleNamespace(
        model=SimpleNamespace(data_preprocessor=preprocessor),
        message_hub=MessageHub.get_instance('mixup_alpha_ramp_test'),
        epoch=0)


def _batch():
    generator = torch.Generator().manual_seed(0)
    return dict(
        inputs=[
            torch.randint(0, 256, (3, 8, 8), generator=generator).byte()
            for _ in range(4)
        ],
        data_samples=[DataSample().set_gt_label(k) for k in (0, 1, 2, 3)])


def test_alpha_grows_linearly_then_holds_and_zero_means_no_mixing():
    runner = _runner(dict(type='Mixup', alpha=0.2))
    hook = MixupAlphaRampHook(ramp_epochs=100)
    hook.before_train(runner)
    preprocessor = runner.model.data_preprocessor
    mixup = hook.batch_augments.augments[0]
    seen = {}
    for epoch in (0, 1, 50, 99, 100, 150):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        seen[epoch] = (mixup.alpha, preprocessor.batch_augments is not None)
        assert runner.message_hub.get_scalar(
            'train/mixup_alpha').current() == pytest.approx(mixup.alpha)
    assert seen == {
        0: (0., False),
        1: (pytest.approx(0.002), True),
        50: (pytest.approx(0.1), True),
        99: (pytest.approx(0.198), True),
        100: (pytest.approx(0.2), True),
        150: (pytest.approx(0.2), True)
    }
    # epoch 0: the images and their one-hot scores pass unmixed
    runner.epoch = 0
    hook.before_train_epoch(runner)
    data = preprocessor(_batch(), True)
    plain = preprocessor(_batch(), False)
    torch.testing.assert_close(data['inputs'], plain['inputs'])
    scores = torch.stack([s.gt_score for s in data['data_samples']])
    torch.testing.assert_close(scores.float(), torch.eye(5)[:4])
    loss = LabelSmoothLoss(0.1, mode='original')(torch.zeros(4, 5), scores)
    assert loss.item() == pytest.approx(torch.tensor(5.).log().item())
    # later epochs mix (a resumed run continues: alpha follows the epoch)
    runner.epoch = 120
    hook.before_train_epoch(runner)
    torch.manual_seed(0)
    data = preprocessor(_batch(), True)
    scores = torch.stack([s.gt_score for s in data['data_samples']])
    assert not torch.equal(scores, torch.eye(5)[:4])


def test_a_config_without_mixup_is_refused():
    hook = MixupAlphaRampHook()
    with pytest.raises(ValueError, match='found no Mixup'):
        hook.before_train(_runner(None))
    with pytest.raises(ValueError, match='ramp_epochs'):
        MixupAlphaRampHook(ramp_epochs=0)
