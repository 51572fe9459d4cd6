"""The involution backends, one module each, named as
``MMPLUG_INVOLUTION_BACKEND`` names them.

* :mod:`.cupy`     CUDA kernels compiled through CuPy (CUDA tensors).
* :mod:`.cpp`      vectorised C++ CPU kernels, NCHW and channels_last, built
  on first use (CPU tensors).
* :mod:`.pytorch`  tap-by-tap PyTorch ops without the unfold tensor (any
  device).

Every backend module provides the same interface (:class:`Backend`);
:data:`BACKEND_MODULES` maps each name to its module, in the order in which
``auto`` considers them: the first whose ``DEVICE_TYPE`` is the tensors'
device type (``None``: any) is that device's native backend.
"""
from typing import Optional, Protocol, Tuple

import torch
from torch import Tensor

from . import cpp, cupy, pytorch

__all__ = ['Backend', 'BACKEND_MODULES', 'native_backend']


class Backend(Protocol):
    """The interface of a backend module (each function a module-level one).

    ``NAME`` is its ``MMPLUG_INVOLUTION_BACKEND`` value, ``DEVICE_TYPE`` the
    ``torch.device.type`` it runs (``None``: any).

    ``unavailable_reason(device)`` is ``None`` when the backend can run
    tensors on ``device``, else a sentence saying why not and what to do.

    ``forward``, ``backward`` and ``generated_forward`` take already checked
    arguments (see :func:`mmplug_involution.ops.involution2d`) and return
    (N, C, Ho, Wo), ``(grad_input, grad_kernel)`` and (N, C, Ho, Wo); the
    operator brings results into the input's memory format.
    ``generated_forward`` is the involution with the kernel
    ``conv2d(reduced, weight, bias)``: a backend that can avoid writing that
    kernel does so, the others compute it, then run ``forward``
    (:mod:`.unfused`). ``generated_backward`` returns its ``(grad_input,
    grad_reduced, grad_weight, grad_bias)``, ``grad_bias`` empty without a
    bias: fused where the backend can, else through the recomputed kernel,
    ``backward`` and the 1x1 conv's backward.
    """
    NAME: str
    DEVICE_TYPE: Optional[str]

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        ...

    def forward(self, input: Tensor, kernel: Tensor, kernel_size: int,
                stride: int, padding: int, dilation: int) -> Tensor:
        ...

    def backward(self, grad_output: Tensor, input: Tensor, kernel: Tensor,
                 kernel_size: int, stride: int, padding: int,
                 dilation: int) -> Tuple[Tensor, Tensor]:
        ...

    def generated_forward(self, input: Tensor, reduced: Tensor, weight: Tensor,
                          bias: Optional[Tensor], kernel_size: int,
                          stride: int, padding: int, dilation: int) -> Tensor:
        ...

    def generated_backward(
            self, grad_output: Tensor, input: Tensor, reduced: Tensor,
            weight: Tensor, bias: Optional[Tensor], kernel_size: int,
            stride: int, padding: int,
            dilation: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        ...


BACKEND_MODULES = {module.NAME: module for module in (cupy, cpp, pytorch)}


def native_backend(device: torch.device) -> str:
    """The name of the first backend made for ``device``'s type: ``cupy`` for
    CUDA, ``cpp`` for CPU, ``pytorch`` for any other device."""
    return next(name for name, module in BACKEND_MODULES.items()
                if module.DEVICE_TYPE in (device.type, None))
