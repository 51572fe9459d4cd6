"""model_complexity counts the package's ops and leaves the model as it
was."""
import pytest
import torch
from torch import nn

from mmplug_involution.analysis import model_complexity
from mmplug_involution.layers import Involution


class _Detector(nn.Module):
    """Has ``extract_feat`` (counted) beside a forward that is not."""

    def __init__(self):
        super().__init__()
        self.layer = Involution(16, kernel_size=3)

    def extract_feat(self, x):
        return self.layer(x)

    def forward(self, x):
        raise AssertionError('the counted method is extract_feat')


def test_counts_the_involution_and_restores_forward():
    model = _Detector().train()
    result = model_complexity(model, (16, 9, 11))
    assert result['counted'] == 'extract_feat (backbone + neck)'
    assert 'mmplug_involution::generated_involution2d' not in (
        result['unsupported'])
    # the involution alone: 16 channels x 9 x 11 pixels x 3 x 3 taps
    assert result['flops'] >= 16 * 9 * 11 * 9
    assert 'forward' not in vars(model)
    assert model.training
    with pytest.raises(AssertionError, match='counted method'):
        model(torch.rand(1, 16, 9, 11))


def test_an_instance_forward_is_put_back():
    model = _Detector()

    def own_forward(x):
        return x

    model.forward = own_forward
    model_complexity(model, (16, 5, 5))
    assert model.forward is own_forward
