"""Test helpers beside the float64 involution reference (which lives in
:mod:`mmplug_involution.ops.reference`, shared with the GPU kit): random
cases and results across thread counts."""
import torch

from mmplug_involution.ops.reference import (  # noqa: F401 (re-exported)
    involution_reference, output_size)


def random_case(n,
                c,
                h,
                w,
                kernel_size,
                stride,
                dilation,
                groups,
                dtype=torch.float64,
                device='cpu',
                generator=None):
    """Random (x, kernel) for one case, with the default padding."""
    padding = dilation * (kernel_size - 1) // 2
    ho = output_size(h, kernel_size, stride, padding, dilation)
    wo = output_size(w, kernel_size, stride, padding, dilation)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=generator)
    k = torch.randn(
        n,
        groups * kernel_size**2,
        ho,
        wo,
        dtype=torch.float64,
        generator=generator)
    return x.to(device=device, dtype=dtype), k.to(device=device, dtype=dtype)


def results_with_threads(fn, counts=(1, 2)):
    """``[fn() with torch on n threads for n in counts]``, the thread count
    restored after."""
    threads = torch.get_num_threads()
    try:
        results = []
        for count in counts:
            torch.set_num_threads(count)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(threads)
