"""pixel_shift_attention and xvolution_fused2d against float64 references.

The PSSA reference loops over output pixels and offsets with explicit
bounds checks (no padding or slicing shared with the package).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmplug_involution.ops import pixel_shift_attention, xvolution_fused2d
from .reference import involution_reference, output_size


def pssa_reference(query, key, logit_scale, kernel_size, stride, dilation):
    """Float64 softmax attention over each in-image neighbour."""
    query, key = query.double(), key.double()
    logit_scale = logit_scale.double()
    batch, channels, out_h, out_w = query.shape
    height, width = key.shape[2:]
    groups = logit_scale.shape[0]
    pad = dilation * (kernel_size - 1) // 2
    logits = torch.full((batch, groups, kernel_size**2, out_h, out_w),
                        float('-inf'),
                        dtype=torch.float64)
    for u in range(kernel_size):
        for v in range(kernel_size):
            for i in range(out_h):
                for j in range(out_w):
                    y = i * stride - pad + u * dilation
                    x = j * stride - pad + v * dilation
                    if 0 <= y < height and 0 <= x < width:
                        product = (query[:, :, i, j] * key[:, :, y, x]).view(
                            batch, groups, -1).sum(-1)
                        logits[:, :, u * kernel_size + v, i, j] = \
                            logit_scale[:, u * kernel_size + v] * product / \
                            math.sqrt(channels // groups)
    return logits.softmax(2).reshape(batch, -1, out_h, out_w)


def random_pssa_case(batch,
                     channels,
                     groups,
                     size,
                     kernel_size,
                     stride,
                     dilation,
                     dtype=torch.float32,
                     seed=0):
    generator = torch.Generator().manual_seed(seed)
    pad = dilation * (kernel_size - 1) // 2
    out = [output_size(s, kernel_size, stride, pad, dilation) for s in size]
    query = torch.randn(batch, channels, *out, generator=generator)
    key = torch.randn(batch, channels, *size, generator=generator)
    scale = torch.rand(groups, kernel_size**2, generator=generator) + 0.5
    return query.to(dtype), key.to(dtype), scale.to(dtype)


@pytest.mark.parametrize('kernel_size,stride,dilation,size', [
    (3, 1, 1, (7, 9)),
    (3, 2, 1, (9, 8)),
    (3, 2, 2, (11, 7)),
    (5, 1, 2, (6, 10)),
    (5, 3, 1, (13, 12)),
    (1, 1, 1, (4, 5)),
])
def test_pssa_matches_float64_reference(kernel_size, stride, dilation, size):
    query, key, scale = random_pssa_case(2, 12, 3, size, kernel_size, stride,
                                         dilation)
    attention = pixel_shift_attention(query, key, scale, kernel_size, stride,
                                      dilation)
    expected = pssa_reference(query, key, scale, kernel_size, stride, dilation)
    assert attention.shape == expected.shape
    torch.testing.assert_close(
        attention.double(), expected, rtol=1e-5, atol=1e-6)


def test_pssa_rows_are_distributions_without_outside_offsets():
    query, key, scale = random_pssa_case(1, 8, 2, (5, 6), 3, 1, 1)
    attention = pixel_shift_attention(query, key, scale, 3, 1, 1)
    grouped = attention.view(1, 2, 9, 5, 6)
    torch.testing.assert_close(
        grouped.sum(2), torch.ones(1, 2, 5, 6), rtol=0, atol=1e-6)
    assert (grouped[:, :, :3, 0] == 0).all()  # row above the image
    assert (grouped[:, :, 2::3, :, -1] == 0).all()  # right of the image
    assert (grouped[:, :, 4] > 0).all()  # the centre is always inside


def test_pssa_gradcheck():
    query, key, scale = random_pssa_case(
        1, 4, 2, (4, 5), 3, 2, 1, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (query, key, scale)]
    assert torch.autograd.gradcheck(
        lambda q, k, a: pixel_shift_attention(q, k, a, 3, 2, 1), inputs)


def test_pssa_memory_is_linear_in_pixels():
    # 512x512: a pixel-by-pixel attention matrix would have 6.9e10 entries
    query, key, scale = random_pssa_case(1, 16, 2, (512, 512), 3, 1, 1)
    attention = pixel_shift_attention(query, key, scale)
    assert attention.shape == (1, 18, 512, 512)
    assert torch.isfinite(attention).all()


@pytest.mark.parametrize('stride,dilation,size', [(1, 1, (7, 9)),
                                                  (2, 1, (9, 8)),
                                                  (2, 2, (11, 13))])
def test_fused_matches_conv_plus_scaled_involution(stride, dilation, size):
    generator = torch.Generator().manual_seed(1)
    channels, groups, kernel_size = 8, 2, 3
    pad = dilation
    out = [output_size(s, kernel_size, stride, pad, dilation) for s in size]
    x = torch.randn(2, channels, *size, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, generator=generator)
    bias = torch.randn(channels, generator=generator)
    attention = torch.randn(2, groups * 9, *out, generator=generator)
    scale = torch.randn(channels, generator=generator)
    result = xvolution_fused2d(x, weight, bias, attention, scale, stride,
                               dilation)
    expected = F.conv2d(x.double(), weight.double(), bias.double(), stride,
                        pad, dilation) + scale.double()[:, None, None] * \
        involution_reference(x, attention, 3, stride, pad, dilation)
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('call,match', [
    (lambda: pixel_shift_attention(
        torch.rand(1, 8, 4, 4), torch.rand(1, 8, 8, 8), torch.ones(2, 9)),
     r'query must be \(1, 8, 8, 8\)'),
    (lambda: pixel_shift_attention(
        torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4), torch.ones(3, 9)),
     'G dividing C=8'),
    (lambda: pixel_shift_attention(
        torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4), torch.ones(2, 4), 2),
     'kernel_size must be odd'),
    (lambda: xvolution_fused2d(
        torch.rand(1, 8, 4, 4), torch.rand(8, 4, 3, 3), None,
        torch.rand(1, 18, 4, 4), torch.ones(8)), r'\(C, C, K, K\)'),
    (lambda: xvolution_fused2d(
        torch.rand(1, 6, 4, 4), torch.rand(8, 8, 3, 3), None,
        torch.rand(1, 18, 4, 4), torch.ones(8)), r'input must be \(N, 8'),
    (lambda: xvolution_fused2d(
        torch.rand(1, 8, 4, 4), torch.rand(8, 8, 3, 3), None,
        torch.rand(1, 18, 4, 4), torch.ones(4)), r'attention_scale must be'),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
