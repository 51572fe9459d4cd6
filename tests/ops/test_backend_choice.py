"""Choosing the backend: ``use_backend`` in code, the environment variable
for the process; resolved once per call, and the backward pass runs on the
backend of its forward pass."""
import pytest
import torch

from mmplug_involution.ops import BACKEND_ENV, generated_involution2d
from mmplug_involution.ops import involution as involution_module
from mmplug_involution.ops import (involution2d, requested_backend,
                                   select_backend, use_backend)
from mmplug_involution.ops.backends import BACKEND_MODULES
from mmplug_involution.ops.backends import cpp as cpp_backend
from .reference import random_case

CPU = torch.device('cpu')
needs_cpp = pytest.mark.skipif(
    cpp_backend.cpu_kernels_error() is not None,
    reason='the C++ CPU kernels are not built')


def test_use_backend_wins_over_the_environment_and_nests(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, 'pytorch')
    assert requested_backend() == ('pytorch', BACKEND_ENV)
    with use_backend('auto'):
        assert requested_backend() == ('auto', 'use_backend')
        with use_backend(' PyTorch '):
            assert select_backend(CPU) == 'pytorch'
        assert requested_backend() == ('auto', 'use_backend')
    assert requested_backend() == ('pytorch', BACKEND_ENV)
    monkeypatch.delenv(BACKEND_ENV)
    assert requested_backend() == ('auto', BACKEND_ENV)


def test_use_backend_refuses_what_is_not_a_backend():
    with pytest.raises(
            ValueError,
            match="use_backend='triton' is not a "
            'backend; use one of auto, cupy, cpp, pytorch'):
        with use_backend('triton'):
            pass
    assert requested_backend()[1] == BACKEND_ENV  # nothing left forced
    with pytest.raises(ValueError, match='use_backend=cupy needs CUDA'):
        with use_backend('cupy'):
            select_backend(CPU)


def test_use_backend_is_left_on_an_exception():
    with pytest.raises(KeyError):
        with use_backend('pytorch'):
            raise KeyError
    assert requested_backend()[1] == BACKEND_ENV


def _record_backward_calls(monkeypatch):
    """backend name -> how many backward passes it ran."""
    calls = {name: 0 for name in BACKEND_MODULES}
    for name, module in BACKEND_MODULES.items():
        for function in ('backward', 'generated_backward'):
            original = getattr(module, function)

            def counted(*args, _name=name, _original=original):
                calls[_name] += 1
                return _original(*args)

            monkeypatch.setattr(module, function, counted)
    return calls


def _generated_case():
    generator = torch.Generator().manual_seed(3)
    x, _ = random_case(2, 8, 9, 7, 3, 1, 1, 2, generator=generator)
    reduced = torch.randn(2, 4, 9, 7, dtype=x.dtype, generator=generator)
    weight = torch.randn(18, 4, 1, 1, dtype=x.dtype, generator=generator)
    return [t.float().requires_grad_(True) for t in (x, reduced, weight)]


@needs_cpp
@pytest.mark.parametrize('op', ['involution2d', 'generated_involution2d'])
def test_backward_runs_on_the_forward_backend(monkeypatch, op):
    """The variable (or the block) changes between forward and backward:
    the backward stays on the forward's backend."""
    calls = _record_backward_calls(monkeypatch)

    def forward():
        if op == 'involution2d':
            x, k = (
                t.float().requires_grad_(True) for t in random_case(
                    2,
                    8,
                    9,
                    7,
                    3,
                    1,
                    1,
                    2,
                    generator=torch.Generator().manual_seed(4)))
            return involution2d(x, k, 3)
        x, reduced, weight = _generated_case()
        return generated_involution2d(x, reduced, weight, None, 3)

    monkeypatch.setenv(BACKEND_ENV, 'cpp')
    out = forward()
    monkeypatch.setenv(BACKEND_ENV, 'pytorch')
    out.sum().backward()
    assert calls == dict(cupy=0, cpp=1, pytorch=0)
    with use_backend('cpp'):
        out = forward()
    out.sum().backward()  # outside the block, the variable says pytorch
    assert calls == dict(cupy=0, cpp=2, pytorch=0)
    with use_backend('pytorch'):
        out = forward()
        monkeypatch.setenv(BACKEND_ENV, 'cpp')
        out.sum().backward()
    assert calls == dict(cupy=0, cpp=2, pytorch=1)


def test_the_backend_is_resolved_once_per_call(monkeypatch):
    asked = []
    original = involution_module.requested_backend

    def counted():
        asked.append(1)
        return original()

    monkeypatch.setattr(involution_module, 'requested_backend', counted)
    x, reduced, weight = _generated_case()
    with use_backend('pytorch'):
        out = generated_involution2d(x, reduced, weight, None, 3)
    out.sum().backward()
    assert len(asked) == 1
