"""The ``cupy`` backend on a real GPU (skipped without a GPU and CuPy).

Its kernel source and launcher are checked without a GPU in
``test_backend_cupy_source.py``.
"""
import pytest
import torch

from mmplug_involution.ops import involution2d
from mmplug_involution.ops.backends import cupy as cupy_backend
from .reference import involution_reference, output_size, random_case

cupy = pytest.importorskip('cupy', reason='CuPy is not installed')
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'),
]
# relative to the largest reference magnitude
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2
}
CASES = [(1, 16, 7, 5, 3, 1, 1, 1), (3, 32, 15, 13, 7, 2, 1, 2),
         (2, 48, 31, 17, 7, 1, 2, 3), (2, 16, 9, 10, 5, 2, 2, 1),
         (1, 8, 5, 6, 1, 2, 1, 2)]


def _rel_err(actual, expected):
    return ((actual.double().cpu() - expected).abs().max() /
            expected.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize('dtype', list(TOLERANCE), ids=str)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_poisoned_outputs_match_reference(dtype, case):
    n, c, h, w, k, s, d, g = case
    p = d * (k - 1) // 2
    gen = torch.Generator().manual_seed(sum(case))
    x, ker = random_case(n, c, h, w, k, s, d, g, dtype=dtype, generator=gen)
    xr = x.double().requires_grad_(True)
    kr = ker.double().requires_grad_(True)
    ref = involution_reference(xr, kr, k, s, p, d)
    gy = torch.randn(ref.shape, dtype=torch.float64, generator=gen).to(dtype)
    ref.backward(gy.double())
    x, ker, gy = x.cuda(), ker.cuda(), gy.cuda()
    ho, wo = output_size(h, k, s, p, d), output_size(w, k, s, p, d)
    y = torch.full((n, c, ho, wo), float('nan'), dtype=dtype, device='cuda')
    dx = torch.full_like(x, float('nan'))
    dk = torch.full_like(ker, float('nan'))
    cupy_backend.forward(x, ker, k, s, p, d, out=y)
    cupy_backend.backward(
        gy, x, ker, k, s, p, d, grad_input=dx, grad_kernel=dk)
    for name, out, expected in (('y', y, ref.detach()), ('dx', dx, xr.grad),
                                ('dk', dk, kr.grad)):
        assert not torch.isnan(out).any(), f'{name} has unwritten elements'
        assert _rel_err(out, expected) < TOLERANCE[dtype], name


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x, ker = random_case(2, 4, 7, 6, 3, 2, 2, 2, generator=gen, device='cuda')
    x.requires_grad_(True)
    ker.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: involution2d(a, b, 3, 2, dilation=2), (x, ker))


def test_non_contiguous_and_non_default_stream():
    gen = torch.Generator().manual_seed(1)
    x, ker = random_case(
        2, 32, 20, 18, 7, 2, 1, 2, dtype=torch.float32, generator=gen)
    ref = involution_reference(x, ker, 7, 2)
    x_nc = x.cuda().transpose(2, 3).contiguous().transpose(2, 3)
    k_nc = ker.cuda().transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(10_000_000)  # a racing launch would read too early
        out = involution2d(x_nc, k_nc, 7, 2)
    torch.cuda.current_stream().wait_stream(stream)
    assert _rel_err(out, ref) < 1e-5


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_runs_in_low_precision(dtype):
    gen = torch.Generator().manual_seed(2)
    x, ker = random_case(
        2, 32, 14, 14, 7, 1, 1, 2, dtype=torch.float32, generator=gen)
    with torch.autocast('cuda', dtype=dtype):
        out = involution2d(x.cuda(), ker.cuda(), 7)
    assert out.dtype == dtype
    ref = involution_reference(x.to(dtype), ker.to(dtype), 7)
    assert _rel_err(out, ref) < TOLERANCE[dtype]


def test_deterministic():
    gen = torch.Generator().manual_seed(3)
    x, ker = random_case(
        2,
        32,
        33,
        29,
        7,
        1,
        1,
        2,
        dtype=torch.float32,
        generator=gen,
        device='cuda')
    gy = torch.randn(2, 32, 33, 29, device='cuda')
    first = cupy_backend.backward(gy, x, ker, 7, 1, 3, 1)
    second = cupy_backend.backward(gy, x, ker, 7, 1, 3, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_compiles_once_for_all_shapes():
    for h in (9, 10, 17):
        x = torch.randn(1, 16, h, h, device='cuda')
        involution2d(x, torch.randn(1, 9, h, h, device='cuda'), 3)
    module = cupy_backend._module
    x = torch.randn(2, 32, 23, 7, device='cuda')
    involution2d(x, torch.randn(2, 98, 23, 7, device='cuda'), 7)
    assert cupy_backend._module is module
