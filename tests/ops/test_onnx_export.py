"""The ONNX translations of involution2d and generated_involution2d.

Both exporters, dynamic batch and spatial axes, odd sizes, strides,
dilations, paddings and group counts: ONNX Runtime against the float64
reference; standard ONNX operators only; no tensor of the unfolded size.
"""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmplug_involution.deploy import export_onnx
from mmplug_involution.ops import (generated_involution2d, involution2d,
                                   onnx_translation_table)
from ..tools.common import tool_module
from .reference import involution_reference, output_size

# (channels, groups, K, stride, padding, dilation)
CASES = [
    (6, 2, 3, 1, 1, 1),
    (8, 1, 7, 1, 3, 1),
    (9, 3, 3, 2, 1, 1),  # strided, odd sizes
    (4, 4, 5, 2, 4, 2),  # dilated, padding other than centred
    (5, 1, 1, 3, 0, 1),  # 1x1 window, stride 3
]
EXPORTERS = ['dynamo', 'torchscript']


class _Involution(nn.Module):

    def __init__(self, kernel_size, stride, padding, dilation):
        super().__init__()
        self.window = (kernel_size, stride, padding, dilation)

    def forward(self, x, kernel):
        return involution2d(x, kernel, *self.window)


class _GeneratedInvolution(nn.Module):
    """A kernel generator's last 1x1 conv inside the involution."""

    def __init__(self, reduced, groups, window, bias):
        super().__init__()
        self.window = window
        taps = groups * window[0]**2
        self.weight = nn.Parameter(torch.randn(taps, reduced, 1, 1))
        self.bias = nn.Parameter(torch.randn(taps)) if bias else None

    def forward(self, x, reduced):
        return generated_involution2d(x, reduced, self.weight, self.bias,
                                      *self.window)


def _export_file(module, inputs, names, exporter, path, **options):
    """``module(*inputs)`` to ``path`` with every input's batch, height and
    width dynamic; ``options`` go to the TorchScript exporter."""
    if exporter == 'torchscript':
        axes = {
            name: {
                0: 'n',
                2: f'{name}_h',
                3: f'{name}_w'
            }
            for name in names
        }
        torch.onnx.export(
            module,
            inputs,
            path,
            dynamo=False,
            opset_version=17,
            input_names=names,
            dynamic_axes=axes,
            **options)
    else:
        dim = torch.export.Dim
        batch = dim('n', min=1)
        shapes = tuple({
            0: batch,
            2: dim(f'{name}_h', min=1),
            3: dim(f'{name}_w', min=1)
        } for name in names)
        torch.onnx.export(
            module,
            inputs,
            path,
            dynamo=True,
            input_names=names,
            dynamic_shapes=shapes)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    return model


def _export(module, inputs, names, exporter, path):
    model = _export_file(module, inputs, names, exporter, path)
    assert {node.domain for node in model.graph.node} <= {'', 'ai.onnx'}
    return onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])


def _case_inputs(channels, groups, kernel_size, stride, padding, dilation, n,
                 h, w, generator):
    ho, wo = (
        output_size(size, kernel_size, stride, padding, dilation)
        for size in (h, w))
    x = torch.randn(n, channels, h, w, generator=generator)
    kernel = torch.randn(
        n, groups * kernel_size**2, ho, wo, generator=generator)
    return x, kernel


@pytest.mark.parametrize('exporter', EXPORTERS)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_involution_in_onnx_runtime_equals_the_reference(
        case, exporter, tmp_path):
    channels, groups, *window = case
    generator = torch.Generator().manual_seed(sum(case))
    module = _Involution(*window)
    session = _export(module, _case_inputs(*case, 2, 11, 9, generator),
                      ['x', 'kernel'], exporter,
                      str(tmp_path / 'involution.onnx'))
    # other batch and sizes than exported with: the axes are dynamic
    for n, h, w in ((2, 11, 9), (3, 14, 7), (1, 8, 13)):
        x, kernel = _case_inputs(*case, n, h, w, generator)
        got = session.run(None, {'x': x.numpy(), 'kernel': kernel.numpy()})
        expected = involution_reference(x, kernel, *window)
        np.testing.assert_allclose(
            got[0], expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('exporter', EXPORTERS)
@pytest.mark.parametrize('bias', [True, False])
def test_generated_involution_in_onnx_runtime_equals_the_reference(
        exporter, bias, tmp_path):
    torch.manual_seed(0)
    channels, groups, reduced_channels = 8, 2, 3
    window = (3, 2, 1, 1)
    module = _GeneratedInvolution(reduced_channels, groups, window, bias)
    names = ['x', 'reduced']

    def inputs(n, h, w):
        ho, wo = (output_size(size, *window) for size in (h, w))
        return (torch.randn(n, channels, h,
                            w), torch.randn(n, reduced_channels, ho, wo))

    session = _export(module, inputs(2, 9, 12), names, exporter,
                      str(tmp_path / 'generated.onnx'))
    for shape in ((2, 9, 12), (3, 15, 8)):
        x, reduced = inputs(*shape)
        got = session.run(None, {'x': x.numpy(), 'reduced': reduced.numpy()})
        kernel = F.conv2d(
            reduced.double(), module.weight.double(),
            None if module.bias is None else module.bias.double())
        expected = involution_reference(x, kernel, *window)
        np.testing.assert_allclose(
            got[0], expected.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('exporter', EXPORTERS)
def test_no_intermediate_of_the_unfolded_size(exporter, tmp_path):
    """The largest tensor of the graph is an input-, output- or
    kernel-sized one, never N*C*K*K*H_out*W_out."""
    n, channels, groups, size, window = 2, 32, 2, 24, (7, 1, 3, 1)
    x = torch.randn(n, channels, size, size)
    kernel = torch.randn(n, groups * 49, size, size)
    path = str(tmp_path / 'lean.onnx')
    if exporter == 'torchscript':
        torch.onnx.export(
            _Involution(*window), (x, kernel),
            path,
            dynamo=False,
            opset_version=17)
    else:
        torch.onnx.export(_Involution(*window), (x, kernel), path, dynamo=True)
    # every intermediate made a graph output, to read its real size
    model = onnx.load(path)
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=['CPUExecutionProvider'])
    feeds = dict(
        zip((i.name for i in session.get_inputs()),
            (x.numpy(), kernel.numpy())))
    sizes = [np.asarray(value).size for value in session.run(None, feeds)]
    padded = n * channels * (size + 6)**2
    assert max(sizes) <= max(padded, kernel.numel())
    assert max(sizes) < n * channels * 49 * size * size / 10


def test_plain_dynamo_export_needs_no_translation_table(tmp_path):
    """``import mmplug_involution`` then ``torch.onnx.export(model, args,
    f)`` in a fresh process, for both ops, with no import hook of ours."""
    script = f'''
import sys, torch
import mmplug_involution
from mmplug_involution.layers import Involution
from mmplug_involution.ops import involution2d
assert not any('mmplug' in type(f).__module__ for f in sys.meta_path)
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = Involution(16, kernel_size=3)
    def forward(self, x, k):
        return involution2d(x, k, 3), self.layer(x)
torch.onnx.export(M().eval(),
                  (torch.randn(1, 16, 5, 6), torch.randn(1, 9, 5, 6)),
                  {str(tmp_path / 'plain.onnx')!r})
'''
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'plain.onnx').exists()


def test_the_translation_table_names_both_ops():
    table = onnx_translation_table()
    ops = torch.ops.mmplug_involution
    assert set(table) == {
        ops.involution2d.default, ops.generated_involution2d.default
    }


def test_export_onnx_refuses_a_size_off_the_divisor(tmp_path):
    with pytest.raises(ValueError, match='multiple of size_divisor=32'):
        export_onnx(
            nn.Identity(),
            torch.randn(1, 3, 40, 64),
            str(tmp_path / 'x.onnx'),
            dynamic=True,
            size_divisor=32)
    with pytest.raises(ValueError, match='exporter must be one of'):
        export_onnx(
            nn.Identity(),
            torch.randn(1, 3, 32, 32),
            str(tmp_path / 'x.onnx'),
            exporter='tensorrt')


@pytest.mark.parametrize('exporter', EXPORTERS)
def test_onnx_runtime_holds_few_windows_at_once(exporter, tmp_path):
    """Static shapes, ONNX Runtime without its arena: the peak memory of a
    run stays near input + kernel, far below K*K windows (every tap's Slice
    waits for the previous tap's sum; without that ordering ONNX Runtime runs
    all 49 Slices first: 320 MiB here, against 57 MiB)."""
    peak_mib = tool_module('harness', 'dev/benchmarks').peak_mib
    x = torch.randn(8, 64, 56, 56)
    kernel = torch.randn(8, 4 * 49, 56, 56)
    path = str(tmp_path / 'order.onnx')
    torch.onnx.export(
        _Involution(7, 1, 3, 1), (x, kernel),
        path,
        dynamo=exporter == 'dynamo',
        input_names=['x', 'k'],
        **({} if exporter == 'dynamo' else dict(opset_version=17)))
    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    session = onnxruntime.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])
    feeds = {'x': x.numpy(), 'k': kernel.numpy()}
    session.run(None, feeds)
    peak = peak_mib(lambda: session.run(None, feeds), torch.device('cpu'))
    window_mib = x.numel() * 4 / 2**20
    assert peak < 4 * (window_mib + kernel.numel() * 4 / 2**20), peak


def test_torchscript_symbolic_serves_opset_11(tmp_path):
    """mmdeploy's configs export at opset 11; the translation's nodes
    exist there."""
    torch.manual_seed(0)
    x, kernel = torch.randn(2, 6, 9, 10), torch.randn(2, 18, 5, 5)
    path = str(tmp_path / 'opset11.onnx')
    torch.onnx.export(
        _Involution(3, 2, 1, 1), (x, kernel),
        path,
        dynamo=False,
        opset_version=11,
        input_names=['x', 'kernel'])
    model = onnx.load(path)
    assert model.opset_import[0].version == 11
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    got = session.run(None, {'x': x.numpy(), 'kernel': kernel.numpy()})[0]
    np.testing.assert_allclose(
        got,
        involution_reference(x, kernel, 3, 2, 1, 1).numpy(),
        rtol=1e-5,
        atol=1e-5)
