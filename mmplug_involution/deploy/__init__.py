"""Deployment: ONNX export of a config's model, its check in ONNX Runtime or
OpenVINO, and the native involution op for OpenVINO."""
from .onnx_export import (EXPORTERS, TensorOutputs, compare_with_onnxruntime,
                          compare_with_openvino, export_onnx)
from .openvino import compile_openvino, custom_op_types, openvino_extension

__all__ = [
    'EXPORTERS', 'TensorOutputs', 'compare_with_onnxruntime',
    'compare_with_openvino', 'export_onnx', 'compile_openvino',
    'custom_op_types', 'openvino_extension'
]
