"""The backend table: one module per ``MMPLUG_INVOLUTION_BACKEND`` name, each
with the same interface, and each saying why it cannot run where it cannot.

Each backend's own numerics are in ``test_backend_<name>.py`` (the
``pytorch`` backend's with the ``cpp`` one, in ``test_backend_cpp.py``).
"""
import concurrent.futures
import inspect
import time

import pytest
import torch

from mmplug_involution.ops import (BACKENDS, GENERATED_INVOLUTION_OP,
                                   INVOLUTION_OP)
from mmplug_involution.ops import involution as involution_module
from mmplug_involution.ops.backends import BACKEND_MODULES, Backend
from mmplug_involution.ops.backends import cpp as cpp_backend
from mmplug_involution.ops.backends import cupy as cupy_backend
from mmplug_involution.ops.backends import native_backend
from .reference import involution_reference, random_case

CPU, CUDA, META = (torch.device('cpu'), torch.device('cuda',
                                                     0), torch.device('meta'))


def test_one_module_per_environment_value():
    assert BACKENDS == ('auto', 'cupy', 'cpp', 'pytorch')
    assert tuple(BACKEND_MODULES) == BACKENDS[1:]
    for name, module in BACKEND_MODULES.items():
        assert module.NAME == name
        assert module.__name__ == f'mmplug_involution.ops.backends.{name}'


@pytest.mark.parametrize('name', list(BACKEND_MODULES))
def test_every_backend_has_the_interface(name):
    module = BACKEND_MODULES[name]
    for attribute in ('unavailable_reason', 'forward', 'backward',
                      'generated_forward', 'generated_backward'):
        function = getattr(module, attribute)
        expected = inspect.signature(getattr(Backend, attribute))
        params = list(inspect.signature(function).parameters)
        # the Protocol's own parameters (less self) come first, in order;
        # a backend may add optional ones after them (cupy's out buffers)
        assert params[:len(expected.parameters) - 1] == list(
            expected.parameters)[1:], attribute
    assert module.DEVICE_TYPE in ('cpu', 'cuda', None)


def test_native_backend_of_each_device():
    assert native_backend(CPU) == 'cpp'
    assert native_backend(CUDA) == 'cupy'
    assert native_backend(META) == 'pytorch'


def test_op_names():
    assert INVOLUTION_OP == 'mmplug_involution::involution2d'
    assert GENERATED_INVOLUTION_OP == ('mmplug_involution::'
                                       'generated_involution2d')
    for name in (INVOLUTION_OP, GENERATED_INVOLUTION_OP):
        namespace, op = name.split('::')
        assert hasattr(getattr(torch.ops, namespace), op)


def test_cupy_reports_why_it_cannot_run_cpu_tensors():
    reason = cupy_backend.unavailable_reason(CPU)
    assert reason is not None
    assert 'need CUDA tensors' in reason and 'cpu' in reason


def test_cupy_reports_a_missing_cupy_and_what_to_install(monkeypatch):
    monkeypatch.setattr(cupy_backend, 'cupy_import_error',
                        lambda: 'CuPy is not installed. pip install cupy')
    assert cupy_backend.unavailable_reason(CUDA) == (
        'CuPy is not installed. pip install cupy')


def test_cupy_import_error_names_the_package_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == 'cupy':
            raise ImportError('No module named cupy')
        return real_import(name, *args, **kwargs)

    probe = cupy_backend.cupy_import_error.__wrapped__
    monkeypatch.setattr(builtins, '__import__', no_cupy)
    reason = probe()
    assert reason.startswith('CuPy is not installed (No module named cupy)')
    assert 'pip install "mmplug-involution[cuda' in reason


def test_cpp_reports_why_it_cannot_run_cuda_tensors():
    reason = cpp_backend.unavailable_reason(CUDA)
    assert reason is not None
    assert 'need CPU tensors' in reason and 'cuda:0' in reason


def test_cpp_reports_a_failed_build_and_what_to_do(monkeypatch, tmp_path):
    """A first use without a compiler: why, where, and the command that
    builds the kernels with the compiler's messages."""
    monkeypatch.setenv('MMPLUG_CACHE_DIR', str(tmp_path))

    def no_compiler(path, verbose):
        raise RuntimeError('Error building extension\ng++: command not found')

    monkeypatch.setattr(cpp_backend, '_compile', no_compiler)
    probe = cpp_backend.cpu_kernels_error.__wrapped__
    reason = probe()
    assert reason.startswith('The involution CPU kernels could not be built '
                             'for this machine')
    assert str(tmp_path) in reason and 'g++: command not found' in reason
    assert cpp_backend.BUILD_COMMAND in reason
    assert not cpp_backend.cpu_kernels_path().exists()
    # and unavailable_reason passes the probe's answer on
    monkeypatch.setattr(cpp_backend, 'cpu_kernels_error', probe)
    assert cpp_backend.unavailable_reason(CPU) == reason


def test_processes_starting_at_once_build_the_kernels_once(
        monkeypatch, tmp_path, capfd):
    """The build lock: of several builders at once, one compiles, the others
    wait for it and find the library; one line says a build runs."""
    monkeypatch.setenv('MMPLUG_CACHE_DIR', str(tmp_path))
    compiled = []

    def slow_compile(path, verbose):
        compiled.append(path)
        time.sleep(0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'library')

    monkeypatch.setattr(cpp_backend, '_compile', slow_compile)
    path = cpp_backend.cpu_kernels_path()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        built = list(
            pool.map(lambda _: cpp_backend._ensure_built(path), range(4)))
    assert sorted(built) == [False, False, False, True]
    assert compiled == [path] and path.read_bytes() == b'library'
    assert capfd.readouterr().err.count('building the involution CPU') == 1
    assert cpp_backend._ensure_built(path) is False  # built: nothing to do


@pytest.mark.parametrize('device', [CPU, CUDA, META], ids=str)
def test_pytorch_runs_everywhere(device):
    assert BACKEND_MODULES['pytorch'].unavailable_reason(device) is None


def test_select_backend_asks_the_backend(monkeypatch):
    """An unavailable backend's reason is what forcing it raises."""
    monkeypatch.setenv(involution_module.BACKEND_ENV, 'cpp')
    monkeypatch.setattr(cpp_backend, 'unavailable_reason',
                        lambda device: 'no kernels here; build them')
    with pytest.raises(RuntimeError, match='no kernels here; build them'):
        involution_module.select_backend(CPU)


def _runnable(name):
    """The backend module and the device it runs here on, or a skip."""
    module = BACKEND_MODULES[name]
    device = CPU if module.DEVICE_TYPE in ('cpu', None) else CUDA
    if module.unavailable_reason(device) is not None or (
            device.type == 'cuda' and not torch.cuda.is_available()):
        pytest.skip(f'{name} cannot run here')
    return module, device


@pytest.mark.parametrize('name', list(BACKEND_MODULES))
def test_generated_forward_of_each_backend(name):
    """``generated_forward`` equals the conv, then the involution, in either
    memory format (run where the backend runs on this machine)."""
    module, device = _runnable(name)
    gen = torch.Generator().manual_seed(4)
    x, _ = random_case(2, 8, 9, 7, 3, 1, 1, 2, generator=gen)
    reduced = torch.randn(2, 4, 9, 7, dtype=torch.float64, generator=gen)
    weight = torch.randn(18, 4, 1, 1, dtype=torch.float64, generator=gen)
    bias = torch.randn(18, dtype=torch.float64, generator=gen)
    kernel = torch.nn.functional.conv2d(reduced, weight, bias)
    expected = involution_reference(x, kernel, 3, 1, 1, 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        args = [
            t.to(device).contiguous(memory_format=layout) for t in (x, reduced)
        ]
        out = module.generated_forward(*args, weight.to(device),
                                       bias.to(device), 3, 1, 1, 1)
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name', list(BACKEND_MODULES))
def test_generated_backward_of_each_backend(name):
    """``generated_backward`` gives the reference's gradients of input,
    reduced features, weight and bias, in either memory format, and an
    empty bias gradient without a bias."""
    module, device = _runnable(name)
    gen = torch.Generator().manual_seed(6)
    x, _ = random_case(2, 8, 11, 7, 3, 2, 1, 2, generator=gen)
    leaves = [
        x,
        torch.randn(2, 4, 6, 4, dtype=torch.float64, generator=gen),
        torch.randn(18, 4, 1, 1, dtype=torch.float64, generator=gen),
        torch.randn(18, dtype=torch.float64, generator=gen)
    ]
    leaves = [t.requires_grad_(True) for t in leaves]
    grad = torch.randn(2, 8, 6, 4, dtype=torch.float64, generator=gen)

    def reference(with_bias):
        used = leaves if with_bias else leaves[:3]
        kernel = torch.nn.functional.conv2d(*used[1:])
        out = involution_reference(used[0], kernel, 3, 2, 1, 1)
        return torch.autograd.grad(out, used, grad)

    for layout in (torch.contiguous_format, torch.channels_last):
        args = [
            t.detach().to(device).contiguous(memory_format=layout)
            for t in (grad, *leaves[:2])
        ]
        for bias in (leaves[3], None):
            grads = module.generated_backward(
                *args, leaves[2].detach().to(device),
                None if bias is None else bias.detach().to(device), 3, 2, 1, 1)
            for value, wanted in zip(grads, reference(bias is not None)):
                torch.testing.assert_close(
                    value.cpu(), wanted, rtol=1e-12, atol=1e-12)
            if bias is None:
                assert grads[3].numel() == 0
