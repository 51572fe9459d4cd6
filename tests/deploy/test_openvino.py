"""The native involution op for OpenVINO: custom-op export and the extension.

The extension's two ops against the float64 reference and PyTorch (f32,
relative 1e-5) at odd shapes, strides, dilations, paddings and groups, with
dynamic batch and sizes; whole models (RedNet-50, the involution FPN, a
Mask R-CNN's backbone and neck); what OpenVINO's default precision hands
the ops; and the errors a user meets without the extension.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmplug_involution.apis import build_config_model
from mmplug_involution.deploy import (TensorOutputs, compare_with_onnxruntime,
                                      compare_with_openvino, compile_openvino,
                                      custom_op_types, export_onnx)
from mmplug_involution.deploy import openvino as openvino_module
from mmplug_involution.deploy import openvino_extension
from mmplug_involution.ops import kernel_build
from mmplug_involution.ops.onnx import CUSTOM_DOMAIN
from ..ops.reference import involution_reference, output_size
from ..ops.test_onnx_export import (CASES, _case_inputs, _export_file,
                                    _GeneratedInvolution, _Involution)

openvino = pytest.importorskip('openvino')

ROOT = Path(__file__).parents[2]
TOLERANCE = 1e-5  # relative to the output's largest magnitude
MASK_RCNN_DEMO = ('configs/demo/'
                  'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py')


def _relative(got, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max() or 1.
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / scale)


def _export_custom(module, inputs, names, exporter, path):
    """``module(*inputs)`` with custom-op nodes and every input's batch,
    height and width dynamic."""
    from mmplug_involution.ops.onnx import CUSTOM_OPSETS, custom_op_nodes
    options = dict(custom_opsets=CUSTOM_OPSETS) if exporter == 'torchscript' \
        else {}
    with custom_op_nodes():
        return _export_file(module, inputs, names, exporter, path, **options)


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
@pytest.mark.parametrize('case', CASES, ids=str)
def test_involution_in_openvino_equals_the_reference_and_pytorch(
        case, exporter, tmp_path):
    channels, groups, *window = case
    generator = torch.Generator().manual_seed(sum(case) + 1)
    module = _Involution(*window)
    path = str(tmp_path / 'involution.onnx')
    model = _export_custom(module, _case_inputs(*case, 2, 11, 9, generator),
                           ['x', 'kernel'], exporter, path)
    assert [(node.domain, node.op_type) for node in model.graph.node
            if node.domain] == [(CUSTOM_DOMAIN, 'Involution')]
    compiled = compile_openvino(path, precision='f32')
    # sizes other than exported with: the axes are dynamic
    for n, h, w in ((2, 11, 9), (3, 14, 7), (1, 8, 13), (2, 23, 17)):
        x, kernel = _case_inputs(*case, n, h, w, generator)
        got = compiled([x.numpy(), kernel.numpy()])[0]
        assert _relative(got, involution_reference(x, kernel,
                                                   *window)) <= TOLERANCE
        assert _relative(got, module(x, kernel).numpy()) <= TOLERANCE


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('case', CASES, ids=str)
def test_generated_involution_in_openvino_equals_the_reference_and_pytorch(
        case, bias, exporter, tmp_path):
    _check_generated(case, bias, exporter, 3, tmp_path)


def test_a_generator_wider_than_one_depth_panel(tmp_path):
    """R = 130: the span conv's product runs in two panels of depth."""
    _check_generated((8, 2, 3, 1, 1, 1), True, 'torchscript', 130, tmp_path)


def _check_generated(case, bias, exporter, reduced_channels, tmp_path):
    channels, groups, *window = case
    torch.manual_seed(sum(case))
    module = _GeneratedInvolution(reduced_channels, groups, window, bias)

    def inputs(n, h, w):
        x = torch.randn(n, channels, h, w)
        ho, wo = (output_size(size, *window) for size in (h, w))
        return x, torch.randn(n, reduced_channels, ho, wo)

    path = str(tmp_path / 'generated.onnx')
    model = _export_custom(module, inputs(2, 11, 9), ['x', 'reduced'],
                           exporter, path)
    nodes = [node for node in model.graph.node if node.domain]
    assert [node.op_type for node in nodes] == ['GeneratedInvolution']
    assert len(nodes[0].input) == (4 if bias else 3)
    compiled = compile_openvino(path, precision='f32')
    # widths over several vectors, a masked tail, odd heights
    for n, h, w in ((2, 11, 9), (1, 17, 20), (3, 6, 9), (1, 9, 37)):
        x, reduced = inputs(n, h, w)
        got = compiled([x.numpy(), reduced.numpy()])[0]
        with torch.no_grad():
            bias = None if module.bias is None else module.bias.double()
            kernel = F.conv2d(reduced.double(), module.weight.double(), bias)
            expected = module(x, reduced).numpy()
        assert _relative(got, involution_reference(x, kernel,
                                                   *window)) <= TOLERANCE
        assert _relative(got, expected) <= TOLERANCE


def _model(config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_config_model(
        Config(dict(model=config, default_scope='mmdet'))).eval()


class _BackboneAndNeck(torch.nn.Module):

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        return tuple(self.detector.extract_feat(x))


def _rednet50():
    return TensorOutputs(_model(dict(type='RedNet', depth=50)))


def _involution_fpn():
    neck = _model(
        dict(
            type='InvolutionFPN',
            in_channels=[64, 128, 256, 512],
            out_channels=64,
            num_outs=5))

    class Features(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.neck = neck

        def forward(self, x):
            feats = [
                F.avg_pool2d(x, 2**i).repeat(1, c // 3 + 1, 1, 1)[:, :c]
                for i, c in zip(range(2, 6), (64, 128, 256, 512))
            ]
            return tuple(self.neck(feats))

    return Features().eval()


def _mask_rcnn_backbone_and_neck():
    cfg = Config.fromfile(str(ROOT / MASK_RCNN_DEMO))
    torch.manual_seed(0)
    return _BackboneAndNeck(build_config_model(cfg)).eval()


MODELS = {
    'RedNet-50': (_rednet50, (1, 3, 96, 128)),
    'involution FPN': (_involution_fpn, (2, 3, 128, 96)),
    'Mask R-CNN backbone and neck':
    (_mask_rcnn_backbone_and_neck, (1, 3, 128, 160)),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(MODELS))
def test_the_model_in_openvino_equals_pytorch(name, tmp_path):
    build, shape = MODELS[name]
    module = build()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    path = str(tmp_path / 'model.onnx')
    export_onnx(
        module,
        x,
        path,
        dynamic=True,
        exporter='torchscript',
        size_divisor=32,
        custom_ops=True)
    assert custom_op_types(path)  # the involutions are native nodes
    other = torch.randn(shape[0] + 1, 3, shape[2] + 32, shape[3] + 64)
    for result in compare_with_openvino(path, module, [x, other]):
        assert result['max_rel'] <= TOLERANCE, result


def test_the_default_precision_hands_the_ops_float32(tmp_path):
    """On a CPU with bfloat16 OpenVINO's default hint runs the convolutions
    in bfloat16 and the custom ops (its 'Reference' nodes) in float32."""

    class Model(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.involution = _GeneratedInvolution(4, 2, (3, 1, 1, 1), True)

        def forward(self, x):
            y = self.conv(x)
            return self.involution(y, F.relu(y[:, :4]))

    path = str(tmp_path / 'model.onnx')
    x = torch.randn(1, 8, 16, 16)
    export_onnx(
        Model().eval(), x, path, exporter='torchscript', custom_ops=True)
    compiled = compile_openvino(path)
    runtime = {
        op.get_rt_info()['layerType'].astype(str):
        op.get_rt_info()['runtimePrecision'].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    assert runtime['Reference'] == 'f32'
    hint = str(compiled.get_property('INFERENCE_PRECISION_HINT'))
    assert runtime['Convolution'] == ('bf16' if 'bfloat16' in hint else 'f32')


def test_a_non_float32_model_is_refused_with_what_to_do(tmp_path):
    helper = onnx.helper
    node = helper.make_node(
        'Involution', ['x', 'k'], ['y'],
        domain=CUSTOM_DOMAIN,
        kernel_size=3,
        stride=1,
        padding=1,
        dilation=1)
    half = onnx.TensorProto.FLOAT16
    graph = helper.make_graph([node], 'g', [
        helper.make_tensor_value_info('x', half, [1, 4, 8, 8]),
        helper.make_tensor_value_info('k', half, [1, 9, 8, 8])
    ], [helper.make_tensor_value_info('y', half, None)])
    path = tmp_path / 'half.onnx'
    onnx.save(
        helper.make_model(
            graph,
            opset_imports=[
                helper.make_opsetid('', 17),
                helper.make_opsetid(CUSTOM_DOMAIN, 1)
            ]), path)
    with pytest.raises(Exception, match='computes in f32'):
        compile_openvino(str(path))


def _custom_op_file(tmp_path) -> str:
    path = str(tmp_path / 'custom.onnx')
    _export_custom(
        _Involution(3, 1, 1,
                    1), (torch.randn(1, 4, 8, 8), torch.randn(1, 9, 8, 8)),
        ['x', 'k'], 'torchscript', path)
    return path


def test_without_the_extension_a_custom_op_model_says_what_to_install(
        monkeypatch, tmp_path):
    path = _custom_op_file(tmp_path)

    def unavailable():
        raise RuntimeError('The involution OpenVINO extension could not be '
                           'built: no C++ compiler (g++) on PATH')

    monkeypatch.setattr(openvino_module, 'openvino_extension', unavailable)
    with pytest.raises(RuntimeError) as error:
        compile_openvino(path)
    message = str(error.value)
    assert 'Involution' in message and 'no C++ compiler' in message
    # and plain OpenVINO, without the extension, cannot read the nodes
    with pytest.raises(Exception, match='Involution'):
        openvino.Core().read_model(path)
    # ONNX Runtime has no such op: the comparison says where to run it
    with pytest.raises(RuntimeError, match='compare_with_openvino'):
        compare_with_onnxruntime(path, _Involution(3, 1, 1, 1), [])


def test_a_failed_build_says_why_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv('MMPLUG_CACHE_DIR', str(tmp_path))
    monkeypatch.setenv('CXX', 'no-such-compiler')
    with pytest.raises(RuntimeError) as error:
        openvino_extension()
    message = str(error.value)
    assert 'no C++ compiler (no-such-compiler)' in message
    assert "pip install 'mmplug-involution[openvino]'" in message
    assert not list(tmp_path.rglob('*.so'))


def test_without_openvino_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'openvino', None)
    with pytest.raises(ImportError, match=r'mmplug-involution\[openvino\]'):
        openvino_extension()


def test_the_extension_is_built_from_the_kernels_core(monkeypatch):
    """One kernel source for both frameworks: the extension's key covers
    every core file and its own front-end, not the torch one."""
    sources = kernel_build.kernel_sources('openvino_ops.cpp')
    names = [path.name for path in sources]
    assert names[-1] == 'openvino_ops.cpp' and 'torch_ops.cpp' not in names
    assert {'nchw_forward.cpp', 'generated_forward.cpp',
            'vectorized.h'} <= set(names)
    assert Path(openvino_extension()).is_file()


def test_the_tool_exports_custom_ops_and_checks_them_in_openvino(tmp_path):
    out = tmp_path / 'model.onnx'
    result = subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'deploy' / 'export_onnx.py'), MASK_RCNN_DEMO,
        '--out',
        str(out), '--shape', '128', '160', '--custom-ops', '--exporter',
        'torchscript'
    ],
                            cwd=ROOT,
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'custom-op' in result.stdout
    lines = [
        line for line in result.stdout.splitlines()
        if line.startswith('OpenVINO (f32) vs PyTorch')
    ]
    assert len(lines) == 1
    assert custom_op_types(str(out)) == ['GeneratedInvolution']
