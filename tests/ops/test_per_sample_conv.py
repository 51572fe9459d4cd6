"""per_sample_conv2d: one grouped conv equals N separate convolutions."""
import pytest
import torch
import torch.nn.functional as F

from mmplug_involution.ops import per_sample_conv2d, per_sample_conv2d_by_taps

CASES = [
    dict(stride=1, padding=1, dilation=1, groups=1, kernel=3),
    dict(stride=2, padding=0, dilation=1, groups=3, kernel=3),
    dict(stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=1, kernel=3),
    dict(stride=1, padding=2, dilation=1, groups=6, kernel=5),  # depthwise
    dict(stride=3, padding=0, dilation=1, groups=2, kernel=1),
]


@pytest.mark.parametrize('case', CASES, ids=str)
@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('function',
                         [per_sample_conv2d, per_sample_conv2d_by_taps])
def test_equals_a_float64_conv_per_sample(case, with_bias, function):
    torch.manual_seed(0)
    groups, kernel = case['groups'], case['kernel']
    x = torch.randn(3, 6, 13, 10)
    weight = torch.randn(3, 12, 6 // groups, kernel, kernel)
    bias = torch.randn(3, 12) if with_bias else None
    args = (case['stride'], case['padding'], case['dilation'], groups)
    out = function(x, weight, bias, *args)
    for n in range(3):
        expected = F.conv2d(x[n:n + 1].double(), weight[n].double(),
                            None if bias is None else bias[n].double(), *args)
        torch.testing.assert_close(
            out[n:n + 1], expected.float(), rtol=1e-5, atol=1e-5)


def test_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(
        2, 6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: per_sample_conv2d(a, w, b, 2, 1, 1, 2),
        (x, weight, bias))


@pytest.mark.parametrize('weight_shape,groups,match', [
    ((3, 8, 4, 3, 3), 1, 'one kernel per sample'),
    ((2, 8, 4, 3), 1, 'one kernel per sample'),
    ((2, 8, 3, 3, 3), 1, 'x needs 3 channels'),
])
def test_bad_shapes_are_refused(weight_shape, groups, match):
    with pytest.raises(ValueError, match=match):
        per_sample_conv2d(
            torch.randn(2, 4, 6, 6), torch.randn(weight_shape), groups=groups)
