"""Functional cores of the operators.

Pure torch + CuPy; no OpenMMLab imports.
"""
from .involution import (BACKEND_ENV, BACKENDS, GENERATED_INVOLUTION_OP,
                         INVOLUTION_OP, generated_involution2d, involution2d,
                         involution_output_size, memory_format_of,
                         requested_backend, select_backend, use_backend)
from .onnx import onnx_translation_table
from .per_sample_conv import per_sample_conv2d, per_sample_conv2d_by_taps
from .xvolution import pixel_shift_attention, xvolution_fused2d

__all__ = [
    'involution2d', 'generated_involution2d', 'involution_output_size',
    'select_backend', 'use_backend', 'requested_backend', 'memory_format_of',
    'BACKEND_ENV', 'BACKENDS', 'INVOLUTION_OP', 'GENERATED_INVOLUTION_OP',
    'pixel_shift_attention', 'xvolution_fused2d', 'per_sample_conv2d',
    'per_sample_conv2d_by_taps', 'onnx_translation_table'
]
