"""The generated involution as a backend's plain ``forward``/``backward``.

For the backends without a fused generated path (cupy and pytorch, through
:func:`bind`): the kernel ``conv2d(reduced, weight, bias)`` is computed (in
the backward pass: recomputed, not kept), the backend's involution runs on
it, and the kernel gradient goes through the 1x1 conv's backward.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['generated_forward', 'generated_backward', 'bind']


def generated_forward(forward: Callable, input: Tensor, reduced: Tensor,
                      weight: Tensor, bias: Optional[Tensor], kernel_size: int,
                      stride: int, padding: int, dilation: int) -> Tensor:
    """``forward(input, conv2d(reduced, weight, bias), ...)``."""
    return forward(input, F.conv2d(reduced, weight, bias), kernel_size, stride,
                   padding, dilation)


def generated_backward(backward: Callable, grad_output: Tensor, input: Tensor,
                       reduced: Tensor, weight: Tensor, bias: Optional[Tensor],
                       kernel_size: int, stride: int, padding: int,
                       dilation: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(grad_input, grad_reduced, grad_weight, grad_bias)`` through the
    recomputed kernel; ``grad_bias`` is empty when ``bias`` is None."""
    kernel = F.conv2d(reduced, weight, bias)
    grad_input, grad_kernel = backward(grad_output, input, kernel, kernel_size,
                                       stride, padding, dilation)
    grad_reduced, grad_weight, grad_bias = (
        torch.ops.aten.convolution_backward(
            grad_kernel, reduced, weight,
            None if bias is None else [bias.shape[0]], [1, 1], [0, 0], [1, 1],
            False, [0, 0], 1, [True, True, bias is not None]))
    if grad_bias is None:
        grad_bias = weight.new_empty(0)
    return grad_input, grad_reduced, grad_weight, grad_bias


def bind(forward: Callable, backward: Callable) -> Tuple[Callable, Callable]:
    """A backend's ``(generated_forward, generated_backward)`` through its own
    ``forward`` and ``backward``."""

    def bound_forward(input: Tensor, reduced: Tensor, weight: Tensor,
                      bias: Optional[Tensor], kernel_size: int, stride: int,
                      padding: int, dilation: int) -> Tensor:
        """The involution with the kernel ``conv2d(reduced, weight, bias)``:
        the conv, then the backend's ``forward``."""
        return generated_forward(forward, input, reduced, weight, bias,
                                 kernel_size, stride, padding, dilation)

    def bound_backward(grad_output: Tensor, input: Tensor, reduced: Tensor,
                       weight: Tensor, bias: Optional[Tensor],
                       kernel_size: int, stride: int, padding: int,
                       dilation: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Its gradients through the recomputed kernel and the backend's
        ``backward``."""
        return generated_backward(backward, grad_output, input, reduced,
                                  weight, bias, kernel_size, stride, padding,
                                  dilation)

    return bound_forward, bound_backward
