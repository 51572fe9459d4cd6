"""The ``cpp`` backend: the compiled C++ CPU kernels.

* The kernels directly (``torch.ops.mmplug_involution_cpu``), with
  ``poison=True``, which fills the results with NaN before the kernels write
  them: output, input gradient and kernel gradient against the independent
  float64 reference, in NCHW and channels_last; layouts, dtypes, threads.
* Through ``involution2d`` (:class:`TestThroughInvolution2d`): every case
  runs once with the C++ kernels (``cpp``) and once with the PyTorch path
  (``pytorch``, the CPU fallback); gradients are checked too.

The set-up builds the kernels, so a missing build fails here rather than
skipping (the fallback without them is tested in
``test_involution_validation.py``).
"""
import itertools

import pytest
import torch

from mmplug_involution.ops import BACKEND_ENV
from mmplug_involution.ops import involution as involution_module
from mmplug_involution.ops import involution2d
from mmplug_involution.ops.backends import cpp as cpp_backend
from .reference import involution_reference, random_case

CASES = [
    # batch, channels, groups, h, w, kernel_size, stride, dilation
    (1, 16, 1, 9, 10, 3, 1, 1),
    (3, 48, 3, 15, 12, 5, 3, 2),
    (2, 64, 4, 17, 19, 7, 2, 1),
    (1, 20, 2, 8, 9, 3, 1, 2),
    (3, 8, 8, 7, 5, 1, 1, 1),
    (1, 33, 3, 13, 11, 7, 1, 1),  # 11 channels a group: vector tails
    (2, 96, 2, 6, 23, 7, 2, 2),  # 48 channels a group: several vectors
    (1, 16, 1, 3, 4, 7, 1, 1),  # smaller than the window
]
TOLERANCES = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 2e-2,
    torch.float16: 4e-3
}


def test_the_setup_built_the_kernels():
    assert cpp_backend.cpu_kernels_error() is None
    assert cpp_backend.unavailable_reason(torch.device('cpu')) is None


def test_the_build_compiles_and_hashes_every_source_file(
        monkeypatch, tmp_path):
    sources = cpp_backend.cpu_sources()
    names = {path.name for path in sources}
    assert {
        'involution_cpu.h', 'vectorized.h', 'torch_ops.cpp',
        'nchw_forward.cpp', 'nchw_backward.cpp', 'nhwc_forward.cpp',
        'nhwc_backward.cpp', 'generated_forward.cpp'
    } <= names
    # the core (sorted), then the torch front-end
    assert sources[:-1] == sorted(sources[:-1])
    assert sources[-1].parent.name == 'frontends'
    # a change to any one file (a header too) moves the build to a new folder
    key = cpp_backend.cpu_kernels_path()
    for source in sources:
        copy = tmp_path / source.name
        copy.write_bytes(source.read_bytes() + b'\n')
        monkeypatch.setattr(
            cpp_backend,
            'cpu_sources',
            lambda source=source, copy=copy:
            [copy if path == source else path for path in sources])
        assert cpp_backend.cpu_kernels_path() != key, source.name


def _reference_case(case, generator):
    batch, channels, groups, h, w, kernel_size, stride, dilation = case
    x, k = random_case(
        batch,
        channels,
        h,
        w,
        kernel_size,
        stride,
        dilation,
        groups,
        generator=generator)
    padding = dilation * (kernel_size - 1) // 2
    xr, kr = x.clone().requires_grad_(True), k.clone().requires_grad_(True)
    ref = involution_reference(xr, kr, kernel_size, stride, padding, dilation)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=generator)
    ref.backward(grad)
    return x, k, grad, (ref.detach(), xr.grad, kr.grad), (kernel_size, stride,
                                                          padding, dilation)


def _relative_error(value, reference):
    return ((value.double() - reference).abs().max() /
            reference.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize(
    'case,dtype,channels_last',
    list(itertools.product(CASES, TOLERANCES, (False, True))))
def test_kernels_match_the_reference(case, dtype, channels_last):
    generator = torch.Generator().manual_seed(sum(case))
    x, k, grad, references, params = _reference_case(case, generator)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x, k, grad = (
        t.to(dtype).contiguous(memory_format=layout) for t in (x, k, grad))
    ops = torch.ops.mmplug_involution_cpu
    out = ops.forward(x, k, *params, poison=True)
    grad_x, grad_k = ops.backward(grad, x, k, *params, poison=True)
    for name, value, reference in zip(('out', 'grad_input', 'grad_kernel'),
                                      (out, grad_x, grad_k), references):
        assert value.dtype == dtype, name
        assert torch.isfinite(value).all(), f'{name}: unwritten (NaN) values'
        if channels_last:
            assert value.is_contiguous(memory_format=torch.channels_last)
        assert _relative_error(value, reference) < TOLERANCES[dtype], name


def test_results_are_identical_with_1_and_2_threads():
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for layout in (torch.contiguous_format, torch.channels_last):
                x, k, grad, _, params = _reference_case(CASES[2], generator)
                generator.manual_seed(0)
                x, k, grad = (
                    t.float().contiguous(memory_format=layout)
                    for t in (x, k, grad))
                ops = torch.ops.mmplug_involution_cpu
                results.append(
                    (ops.forward(x, k,
                                 *params), *ops.backward(grad, x, k, *params)))
    finally:
        torch.set_num_threads(threads)
    one, two = results[:2], results[2:]
    for a, b in zip(one, two):  # same layout, other thread count: bitwise
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)


def test_involution2d_returns_the_input_memory_format(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    generator = torch.Generator().manual_seed(1)
    x, k = random_case(2, 32, 11, 13, 7, 2, 1, 2, generator=generator)
    x = x.float().contiguous(memory_format=torch.channels_last)
    k = k.float().contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    k.requires_grad_(True)
    out = involution2d(x, k, 7, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.square().sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    reference = involution_reference(x.detach(), k.detach(), 7, 2)
    assert _relative_error(out, reference) < 1e-5
    # an NCHW input with a channels_last kernel still gives NCHW
    plain = involution2d(x.detach().contiguous(), k.detach(), 7, 2)
    assert plain.is_contiguous()
    torch.testing.assert_close(plain, out.detach())


def test_gradcheck_through_involution2d(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    generator = torch.Generator().manual_seed(2)
    for layout in (torch.contiguous_format, torch.channels_last):
        x, k = random_case(2, 6, 7, 6, 3, 2, 2, 3, generator=generator)
        x = x.contiguous(memory_format=layout).requires_grad_(True)
        k = k.contiguous(memory_format=layout).requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, b: involution2d(a, b, 3, 2, dilation=2), (x, k))


def test_cpu_is_the_default_backend_and_cuda_cannot_be_forced(monkeypatch):
    assert involution_module.select_backend(torch.device('cpu')) == 'cpp'
    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    with pytest.raises(ValueError, match='cpp needs CPU tensors'):
        involution_module.select_backend(torch.device('cuda', 0))


WINDOWS = list(itertools.product((1, 3, 5, 7), (1, 2, 3), (1, 2)))


class TestThroughInvolution2d:
    """``involution2d`` on CPU tensors against the float64 reference,
    with the C++ kernels and with the PyTorch fallback."""

    @pytest.fixture(autouse=True, params=['cpp', 'pytorch'])
    def backend(self, request, monkeypatch):
        monkeypatch.setenv(BACKEND_ENV, request.param)
        return request.param

    @pytest.mark.parametrize('kernel_size,stride,dilation', WINDOWS)
    def test_forward_and_grads_match_reference(self, kernel_size, stride,
                                               dilation):
        gen = torch.Generator().manual_seed(kernel_size * 100 + stride * 10 +
                                            dilation)
        for batch in (1, 3):
            groups = int(torch.randint(1, 4, (1, ), generator=gen))
            channels = groups * int(torch.randint(1, 4, (1, ), generator=gen))
            # odd and even, square and not
            h, w = (int(v) for v in torch.randint(3, 14, (2, ), generator=gen))
            x, k = random_case(
                batch,
                channels,
                h,
                w,
                kernel_size,
                stride,
                dilation,
                groups,
                generator=gen)
            x.requires_grad_(True)
            k.requires_grad_(True)
            out = involution2d(x, k, kernel_size, stride, dilation=dilation)
            xr = x.detach().clone().requires_grad_(True)
            kr = k.detach().clone().requires_grad_(True)
            ref = involution_reference(xr, kr, kernel_size, stride, None,
                                       dilation)
            torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
            grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
            out.backward(grad)
            ref.backward(grad)
            torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(k.grad, kr.grad, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize('kernel_size,stride,dilation,padding',
                             [(3, 1, 1, 0), (3, 2, 2, 3), (5, 3, 1, 1),
                              (7, 2, 2, 4), (1, 2, 1, 1)])
    def test_explicit_padding(self, kernel_size, stride, dilation, padding):
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(2, 6, 11, 9, dtype=torch.float64, generator=gen)
        ho = (11 + 2 * padding - dilation *
              (kernel_size - 1) - 1) // stride + 1
        wo = (9 + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
        k = torch.randn(
            2, 3 * kernel_size**2, ho, wo, dtype=torch.float64, generator=gen)
        out = involution2d(x, k, kernel_size, stride, padding, dilation)
        ref = involution_reference(x, k, kernel_size, stride, padding,
                                   dilation)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize('kernel_size,stride,dilation,groups',
                             [(3, 1, 1, 1), (3, 2, 1, 2), (5, 2, 2, 1),
                              (7, 1, 2, 2), (1, 1, 1, 3)])
    def test_gradcheck(self, kernel_size, stride, dilation, groups):
        gen = torch.Generator().manual_seed(3)
        x, k = random_case(
            2,
            2 * groups,
            7,
            6,
            kernel_size,
            stride,
            dilation,
            groups,
            generator=gen)
        x.requires_grad_(True)
        k.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, b: involution2d(
                a, b, kernel_size, stride, dilation=dilation), (x, k))

    @pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5),
                                           (torch.float16, 2e-3),
                                           (torch.bfloat16, 1e-2)])
    def test_low_precision_dtypes(self, dtype, tol):
        """float32 accumulation: errors stay at the dtype's own rounding."""
        gen = torch.Generator().manual_seed(11)
        x, k = random_case(2, 32, 15, 13, 7, 2, 1, 2, generator=gen)
        x, k = x.to(dtype), k.to(dtype)
        out = involution2d(x, k, 7, 2)
        assert out.dtype == dtype
        ref = involution_reference(x, k, 7, 2)  # exact on the rounded inputs
        scale = ref.abs().max()
        assert ((out.double() - ref).abs().max() / scale) < tol

    def test_non_contiguous_inputs(self):
        gen = torch.Generator().manual_seed(5)
        x, k = random_case(2, 8, 9, 11, 3, 2, 1, 2, generator=gen)
        x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
        k_nc = torch.stack([k, torch.zeros_like(k)], dim=2).flatten(1,
                                                                    2)[:, ::2]
        assert not x_nc.is_contiguous() and not k_nc.is_contiguous()
        torch.testing.assert_close(
            involution2d(x_nc, k_nc, 3, 2), involution_reference(x, k, 3, 2))

    def test_empty_batch(self):
        x = torch.randn(0, 4, 5, 5)
        k = torch.randn(0, 9, 5, 5)
        assert involution2d(x, k, 3).shape == (0, 4, 5, 5)
