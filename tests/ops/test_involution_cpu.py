"""The CPU backends against the float64 reference, through involution2d.

Every test runs once with the compiled C++ kernels (``cpp``) and once with
the PyTorch path (``pytorch``); gradients are checked too. The C++ kernels'
own cases (channels_last, poisoned outputs, threads) are in
``test_involution_cpp.py``.
"""
import itertools

import pytest
import torch

from mmplug_involution.ops import BACKEND_ENV, involution2d
from .reference import involution_reference, random_case

CASES = list(itertools.product((1, 3, 5, 7), (1, 2, 3), (1, 2)))


@pytest.fixture(autouse=True, params=['cpp', 'pytorch'])
def backend(request, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param


@pytest.mark.parametrize('kernel_size,stride,dilation', CASES)
def test_forward_and_grads_match_reference(kernel_size, stride, dilation):
    gen = torch.Generator().manual_seed(kernel_size * 100 + stride * 10 +
                                        dilation)
    for batch in (1, 3):
        groups = int(torch.randint(1, 4, (1, ), generator=gen))
        channels = groups * int(torch.randint(1, 4, (1, ), generator=gen))
        # odd and even, square and not
        h, w = (int(v) for v in torch.randint(3, 14, (2, ), generator=gen))
        x, k = random_case(batch, channels, h, w, kernel_size, stride,
                           dilation, groups, generator=gen)
        x.requires_grad_(True)
        k.requires_grad_(True)
        out = involution2d(x, k, kernel_size, stride, dilation=dilation)
        xr = x.detach().clone().requires_grad_(True)
        kr = k.detach().clone().requires_grad_(True)
        ref = involution_reference(xr, kr, kernel_size, stride, None, dilation)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        out.backward(grad)
        ref.backward(grad)
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(k.grad, kr.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kernel_size,stride,dilation,padding',
                         [(3, 1, 1, 0), (3, 2, 2, 3), (5, 3, 1, 1),
                          (7, 2, 2, 4), (1, 2, 1, 1)])
def test_explicit_padding(kernel_size, stride, dilation, padding):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64, generator=gen)
    ho = (11 + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    wo = (9 + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    k = torch.randn(
        2, 3 * kernel_size**2, ho, wo, dtype=torch.float64, generator=gen)
    out = involution2d(x, k, kernel_size, stride, padding, dilation)
    ref = involution_reference(x, k, kernel_size, stride, padding, dilation)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kernel_size,stride,dilation,groups',
                         [(3, 1, 1, 1), (3, 2, 1, 2), (5, 2, 2, 1),
                          (7, 1, 2, 2), (1, 1, 1, 3)])
def test_gradcheck(kernel_size, stride, dilation, groups):
    gen = torch.Generator().manual_seed(3)
    x, k = random_case(2, 2 * groups, 7, 6, kernel_size, stride, dilation,
                       groups, generator=gen)
    x.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: involution2d(
            a, b, kernel_size, stride, dilation=dilation), (x, k))


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5),
                                       (torch.float16, 2e-3),
                                       (torch.bfloat16, 1e-2)])
def test_low_precision_dtypes(dtype, tol):
    """float32 accumulation: errors stay at the dtype's own rounding."""
    gen = torch.Generator().manual_seed(11)
    x, k = random_case(2, 32, 15, 13, 7, 2, 1, 2, generator=gen)
    x, k = x.to(dtype), k.to(dtype)
    out = involution2d(x, k, 7, 2)
    assert out.dtype == dtype
    ref = involution_reference(x, k, 7, 2)  # exact on the rounded inputs
    scale = ref.abs().max()
    assert ((out.double() - ref).abs().max() / scale) < tol


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(5)
    x, k = random_case(2, 8, 9, 11, 3, 2, 1, 2, generator=gen)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    k_nc = torch.stack([k, torch.zeros_like(k)], dim=2).flatten(1, 2)[:, ::2]
    assert not x_nc.is_contiguous() and not k_nc.is_contiguous()
    torch.testing.assert_close(
        involution2d(x_nc, k_nc, 3, 2), involution_reference(x, k, 3, 2))


def test_empty_batch():
    x = torch.randn(0, 4, 5, 5)
    k = torch.randn(0, 9, 5, 5)
    assert involution2d(x, k, 3).shape == (0, 4, 5, 5)
