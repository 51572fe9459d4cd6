"""The C++ kernels' fused backward of the generated involution.

``torch.ops.mmplug_involution_cpu.generated_backward`` computes the
gradients of ``involution(x, conv2d(reduced, weight, bias))`` for input,
reduced features, weight and bias band by band, never writing the kernel
or its gradient. Checked with poisoned (NaN) outputs against the float64
reference (``tests/ops/reference.py`` under autograd) and against the
unfused path (the kernel written, the C++ ``backward``, the 1x1 conv's
backward), on odd sizes, strides 1-3, dilations 1-2, K 1-7, several group
counts, batch 1 and 3, images tall enough for many bands and chunks, both
layouts and non-contiguous operands; bitwise the same with 1 and 2
threads; gradchecked in float64.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

from mmplug_involution.ops import BACKEND_ENV, generated_involution2d
from mmplug_involution.ops.backends import cpp as cpp_backend
from mmplug_involution.ops.backends import unfused
from .reference import involution_reference, output_size, results_with_threads

pytestmark = pytest.mark.skipif(
    cpp_backend.cpu_kernels_error() is not None,
    reason='the C++ CPU kernels are not built')

CASES = [
    # n, channels, groups, reduced, h, w, kernel_size, stride, padding, dil.
    (1, 32, 2, 8, 23, 11, 7, 1, 3, 1),
    (3, 24, 3, 5, 31, 9, 5, 1, 4, 2),  # odd R, dilation 2, padding 4
    (1, 48, 3, 12, 29, 14, 3, 2, 1, 1),
    (3, 64, 4, 16, 33, 19, 7, 2, 3, 1),  # 196 kernel channels: tails
    (1, 33, 3, 7, 26, 15, 3, 3, 1, 1),  # stride 3, 11 channels a group
    (3, 10, 2, 4, 40, 7, 1, 2, 0, 1),  # K = 1 at stride 2: gaps
    (1, 16, 1, 3, 5, 3, 7, 1, 3, 1),  # smaller than the window
    (3, 20, 5, 6, 17, 13, 5, 2, 0, 2),  # no padding, stride 2, dilation 2
    (1, 17, 1, 9, 45, 8, 3, 1, 2, 1),  # padding larger than centred
]


def _tensors(case, generator):
    n, c, groups, r, h, w, k, s, p, d = case
    ho, wo = (output_size(size, k, s, p, d) for size in (h, w))

    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator)

    tensors = dict(
        grad_output=randn(n, c, ho, wo),
        input=randn(n, c, h, w),
        reduced=randn(n, r, ho, wo),
        weight=randn(groups * k * k, r, 1, 1) / r**0.5,
        bias=randn(groups * k * k))
    return tensors, (k, s, p, d)


def _reference_grads(tensors, params):
    leaves = {
        name: tensors[name].clone().requires_grad_(True)
        for name in ('input', 'reduced', 'weight', 'bias')
    }
    kernel = F.conv2d(leaves['reduced'], leaves['weight'], leaves['bias'])
    out = involution_reference(leaves['input'], kernel, *params)
    return torch.autograd.grad(out, list(leaves.values()),
                               tensors['grad_output'])


def _fused(tensors, params, dtype, layout, **kwargs):
    args = [
        t.to(dtype).contiguous(
            memory_format=layout) if t.dim() == 4 else t.to(dtype)
        for t in tensors.values()
    ]
    return torch.ops.mmplug_involution_cpu.generated_backward(
        *args, *params, **kwargs)


def _relative_error(value, reference):
    return ((value.double() - reference).abs().max() /
            reference.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize(
    'case,dtype,layout',
    list(
        itertools.product(CASES, (torch.float64, torch.float32),
                          (torch.channels_last, torch.contiguous_format))))
def test_matches_the_reference_with_poisoned_outputs(case, dtype, layout):
    generator = torch.Generator().manual_seed(sum(case))
    tensors, params = _tensors(case, generator)
    grads = _fused(tensors, params, dtype, layout, poison=True)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    for name, value, wanted in zip(('input', 'reduced', 'weight', 'bias'),
                                   grads, _reference_grads(tensors, params)):
        assert value.dtype == dtype and value.shape == wanted.shape, name
        assert torch.isfinite(value).all(), f'unwritten (NaN) {name} grad'
        assert _relative_error(value, wanted) < tolerance, name


@pytest.mark.parametrize('case', CASES)
def test_matches_the_unfused_path(case):
    generator = torch.Generator().manual_seed(len(case) * 7 + sum(case))
    tensors, params = _tensors(case, generator)
    args = {
        name:
        t.float().contiguous(
            memory_format=torch.channels_last) if t.dim() == 4 else t.float()
        for name, t in tensors.items()
    }
    fused = torch.ops.mmplug_involution_cpu.generated_backward(
        *args.values(), *params)
    reference = unfused.generated_backward(cpp_backend.backward,
                                           *args.values(), *params)
    for value, wanted in zip(fused, reference):
        torch.testing.assert_close(value, wanted, rtol=1e-4, atol=1e-4)


def test_non_contiguous_operands():
    generator = torch.Generator().manual_seed(11)
    tensors, params = _tensors(CASES[3], generator)
    # every 4-D operand a strided view of a larger tensor
    views = {
        name:
        torch.stack([t, t], dim=2).flatten(1, 2)[:, ::2] if t.dim() == 4 else t
        for name, t in tensors.items()
    }
    assert not views['input'].is_contiguous()
    grads = torch.ops.mmplug_involution_cpu.generated_backward(
        *views.values(), *params, poison=True)
    for value, wanted in zip(grads, _reference_grads(tensors, params)):
        assert _relative_error(value, wanted) < 1e-12


def test_bitwise_the_same_with_1_and_2_threads():
    # 20 images of 4 bands of 16 rows (the tiles' budget at 40 columns of
    # 392 kernel channels): more bands than partial-sum chunks (64)
    case = (20, 16, 8, 4, 60, 40, 7, 1, 3, 1)
    tensors, params = _tensors(case, torch.Generator().manual_seed(2))
    results = results_with_threads(
        lambda: _fused(tensors, params, torch.float32, torch.channels_last))
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float32(dtype, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    tensors, params = _tensors(CASES[3], torch.Generator().manual_seed(4))
    grads = _fused(tensors, params, dtype, torch.channels_last)
    rounded = {name: t.to(dtype).double() for name, t in tensors.items()}
    wanted = _reference_grads(rounded, params)
    for value, reference in zip(grads, wanted):
        assert value.dtype == dtype
        # float32 accumulation: only the result's rounding (8 or 11 bits)
        assert _relative_error(value, reference) < 1e-2


@pytest.mark.parametrize('stride,dilation', [(1, 1), (2, 1), (3, 2)])
def test_gradcheck_over_several_bands(stride, dilation, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    generator = torch.Generator().manual_seed(stride + dilation)
    k, groups = 3, 2
    padding = dilation * (k - 1) // 2
    h = 18 * stride  # 18 output rows: bands of 5 rows
    ho, wo = (
        output_size(size, k, stride, padding, dilation) for size in (h, 5))
    args = [
        torch.randn(1, 4, h, 5, dtype=torch.float64, generator=generator),
        torch.randn(1, 3, ho, wo, dtype=torch.float64, generator=generator),
        torch.randn(
            groups * k * k, 3, 1, 1, dtype=torch.float64, generator=generator),
        torch.randn(groups * k * k, dtype=torch.float64, generator=generator)
    ]
    args = [(t.contiguous(memory_format=torch.channels_last)
             if t.dim() == 4 else t).requires_grad_(True) for t in args]
    assert torch.autograd.gradcheck(
        lambda x, red, w, b: generated_involution2d(x, red, w, b, k, stride,
                                                    padding, dilation), args)


def test_without_bias_and_through_autograd(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    tensors, params = _tensors(CASES[0], torch.Generator().manual_seed(9))
    leaves = [
        tensors[name].clone().requires_grad_(True)
        for name in ('input', 'reduced', 'weight')
    ]
    out = generated_involution2d(*leaves, None, *params)
    grads = torch.autograd.grad(out, leaves, tensors['grad_output'])
    kernel = F.conv2d(leaves[1], leaves[2])
    wanted = torch.autograd.grad(
        involution_reference(leaves[0], kernel, *params), leaves,
        tensors['grad_output'])
    for value, reference in zip(grads, wanted):
        assert _relative_error(value, reference) < 1e-12
