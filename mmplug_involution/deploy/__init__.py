"""ONNX export of a config's model and its check in ONNX Runtime."""
from .onnx_export import (EXPORTERS, TensorOutputs, compare_with_onnxruntime,
                          export_onnx)

__all__ = [
    'EXPORTERS', 'TensorOutputs', 'compare_with_onnxruntime', 'export_onnx'
]
