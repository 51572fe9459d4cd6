"""Every bad input to involution2d raises a ValueError.

The error names what was expected.
"""
import re
import warnings

import pytest
import torch

from mmplug_involution.ops import involution2d
from .reference import involution_reference, random_case


def _ok():
    return torch.randn(2, 8, 9, 9), torch.randn(2, 2 * 9, 9, 9)


@pytest.mark.parametrize('kernel,match', [
    (torch.randn(2, 17, 9, 9), r'17 channels, expected G\*K\*K = G\*9'),
    (torch.randn(2, 27, 9, 9), r'C=8 .*not divisible by the G=3 groups'),
    (torch.randn(2, 18, 8, 9), r'expected \(2, 18, 9, 9\)'),
    (torch.randn(3, 18, 9, 9), r'expected \(2, 18, 9, 9\)'),
    (torch.randn(2, 18, 9), r'must be 4-D'),
])
def test_bad_kernel_shape(kernel, match):
    x, _ = _ok()
    with pytest.raises(ValueError, match=match):
        involution2d(x, kernel, 3)


def test_stride_changes_expected_kernel_size():
    x, k = _ok()
    with pytest.raises(
            ValueError, match=r'expected \(2, 18, 5, 5\).*stride=2'):
        involution2d(x, k, 3, stride=2)


def test_even_kernel_size():
    x = torch.randn(2, 8, 9, 9)
    with pytest.raises(ValueError, match='kernel_size must be odd, got 4'):
        involution2d(x, torch.randn(2, 32, 9, 9), 4)


@pytest.mark.parametrize('kwargs,match', [
    (dict(stride=0), 'stride must be an int >= 1'),
    (dict(dilation=0), 'dilation must be an int >= 1'),
    (dict(padding=-1), 'padding must be an int >= 0'),
    (dict(stride=1.5), 'stride must be an int'),
])
def test_bad_hyper_parameters(kwargs, match):
    x, k = _ok()
    with pytest.raises(ValueError, match=match):
        involution2d(x, k, 3, **kwargs)


def test_input_too_small():
    with pytest.raises(ValueError, match='too small'):
        involution2d(
            torch.randn(1, 2, 2, 2), torch.randn(1, 9, 1, 1), 3, padding=0)


def test_dtype_mismatch():
    x, k = _ok()
    with pytest.raises(
            ValueError,
            match='input has dtype torch.float32 but '
            'kernel has torch.float64'):
        involution2d(x, k.double(), 3)


def test_unsupported_dtype():
    x, k = _ok()
    with pytest.raises(ValueError, match='dtype torch.int64'):
        involution2d(x.long(), k.long(), 3)


def test_device_mismatch():
    x, k = _ok()
    with pytest.raises(
            ValueError, match='input is on cpu but kernel is on '
            'meta'):
        involution2d(x, k.to('meta'), 3)


def test_not_a_tensor():
    _, k = _ok()
    with pytest.raises(ValueError, match='input must be a torch.Tensor'):
        involution2d([[1.0]], k, 3)


def test_forcing_an_unknown_or_impossible_backend(monkeypatch):
    x, k = _ok()
    monkeypatch.setenv('MMPLUG_INVOLUTION_BACKEND', 'triton')
    with pytest.raises(ValueError, match="'triton' is not a backend"):
        involution2d(x, k, 3)
    monkeypatch.setenv('MMPLUG_INVOLUTION_BACKEND', 'cupy')
    with pytest.raises(ValueError, match='cupy needs CUDA tensors'):
        involution2d(x, k, 3)


@pytest.mark.parametrize('device,native,probe,message', [
    (torch.device('cuda', 0), 'cupy', 'cupy_import_error',
     'CuPy is not installed. pip install cupy-cuda12x'),
    (torch.device('cpu'), 'cpp', 'cpu_kernels_error',
     'The compiled involution CPU kernels are not built for this machine; '
     'build them with `bash tools/dev/setup_env.sh`'),
])
def test_missing_native_backend_warns_once_then_falls_back(
        monkeypatch, device, native, probe, message):
    """CUDA without CuPy, CPU without the C++ kernels: one warning saying
    what to do, then the PyTorch path; forcing the native backend fails."""
    from mmplug_involution.ops import involution as involution_module
    from mmplug_involution.ops.backends import BACKEND_MODULES
    backend = BACKEND_MODULES[native]  # its probe behind unavailable_reason
    monkeypatch.setattr(backend, probe, lambda: message)
    monkeypatch.setattr(involution_module, '_warned', set())
    with pytest.warns(
            UserWarning,
            match=re.escape(message) +
            '.*Falling back to the slower PyTorch implementation '
            f'of involution on {device.type}'):
        assert involution_module.select_backend(device) == 'pytorch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a second call stays silent
        assert involution_module.select_backend(device) == 'pytorch'
    if device.type == 'cpu':  # and the fallback computes the right thing
        x, k = random_case(1, 4, 5, 5, 3, 1, 1, 1)
        torch.testing.assert_close(
            involution2d(x, k, 3), involution_reference(x, k, 3))
    monkeypatch.setenv('MMPLUG_INVOLUTION_BACKEND', native)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        involution_module.select_backend(device)
    monkeypatch.setattr(backend, probe, lambda: None)
    assert involution_module.select_backend(device) == native
