"""mmplug_involution.deploy.mmdeploy_compat: opt in, idempotent, and
mmdeploy 1.3.1's ``torch2onnx`` of the involution Mask R-CNN, run in ONNX
Runtime against PyTorch."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).parents[2]
COMPAT = 'mmplug_involution.deploy.mmdeploy_compat'
EXPORT_MODULE = 'mmdeploy.apis.onnx.export'
NO_MMDEPLOY = ('mmdeploy is not installed: '
               'pip install --no-deps mmdeploy==1.3.1 aenum')
INSTALL_HINT = r'pip install --no-deps mmdeploy==1\.3\.1 aenum'
MASK_RCNN = (
    ROOT / 'configs/demo/'
    'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py')

# mmdeploy v1.3.1 configs/mmdet/instance-seg/
# instance-seg_onnxruntime_dynamic.py with its _base_ files merged (the
# wheel ships no configs): opset 11, dynamic batch, size and detections,
# masks as the mask head's 28x28 probabilities (no pasting)
INSTANCE_SEG_ORT_DYNAMIC = dict(
    backend_config=dict(type='onnxruntime'),
    codebase_config=dict(
        type='mmdet',
        task='ObjectDetection',
        model_type='end2end',
        post_processing=dict(
            score_threshold=0.05,
            confidence_threshold=0.005,
            iou_threshold=0.5,
            max_output_boxes_per_class=200,
            pre_top_k=5000,
            keep_top_k=100,
            background_label_id=-1,
            export_postprocess_mask=False)),
    onnx_config=dict(
        type='onnx',
        export_params=True,
        keep_initializers_as_inputs=False,
        opset_version=11,
        save_file='end2end.onnx',
        input_names=['input'],
        output_names=['dets', 'labels', 'masks'],
        input_shape=None,
        optimize=True,
        dynamic_axes=dict(
            input={
                0: 'batch',
                2: 'height',
                3: 'width'
            },
            dets={
                0: 'batch',
                1: 'num_dets'
            },
            labels={
                0: 'batch',
                1: 'num_dets'
            },
            masks={
                0: 'batch',
                1: 'num_dets',
                2: 'height',
                3: 'width'
            })))

# ONNX Runtime and PyTorch run the same float32 graph; they differ only by
# rounding order (measured: boxes 8e-6 px on a 128 px image, scores 1e-7,
# mask probabilities 6e-8). The tolerances leave 100x of that for other
# CPUs' kernels and stay far below what a wrong translation gives (a
# RoIAlign half-pixel error moves boxes and masks by tenths of a pixel, a
# wrong involution window changes every feature).
BOX_ATOL = 1e-3  # pixels
SCORE_ATOL = 1e-4
MASK_ATOL = 1e-4
TOP = 15  # detections compared (of the 20 the demo's test_cfg keeps)


def _mmdeploy_apis():
    return pytest.importorskip('mmdeploy.apis', reason=NO_MMDEPLOY)


@pytest.fixture
def compat():
    """The helper, applied (its first import applies it, a later one does
    not); afterwards mmdeploy and torch are as they were before the
    test."""
    _mmdeploy_apis()
    was_patched = COMPAT in sys.modules and sys.modules[
        COMPAT].is_mmdeploy_patched()
    module = importlib.import_module(COMPAT)
    module.patch_mmdeploy()
    yield module
    if was_patched:
        module.patch_mmdeploy()
    else:
        module.unpatch_mmdeploy()


OPT_IN = r'''
import importlib, json, sys
import torch.onnx.symbolic_opset9 as opset9
had_cast_long = hasattr(opset9, '_cast_Long')
try:
    export = importlib.import_module('mmdeploy.apis.onnx.export')
except ImportError:
    export = None
import mmplug_involution, mmplug_involution.deploy  # noqa
import mmplug_involution.runtime  # noqa
print(json.dumps(dict(
    helper_imported='mmplug_involution.deploy.mmdeploy_compat' in sys.modules,
    cast_long_unchanged=hasattr(opset9, '_cast_Long') == had_cast_long,
    export_calls_torch=export is None or export.torch is sys.modules['torch'],
)))
'''


def test_importing_the_package_patches_nothing():
    out = subprocess.run([sys.executable, '-c', OPT_IN],
                         cwd=ROOT,
                         check=True,
                         capture_output=True,
                         text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == dict(
        helper_imported=False,
        cast_long_unchanged=True,
        export_calls_torch=True)


def test_patch_is_idempotent_and_undone(compat):
    export = sys.modules[EXPORT_MODULE]
    needs = compat.mmdeploy_needs_patch()
    assert compat.is_mmdeploy_patched()
    stand_in = export.torch
    assert compat.patch_mmdeploy() == dict(
        torchscript_export=False, cast_long=False)
    assert export.torch is stand_in

    compat.unpatch_mmdeploy()
    assert export.torch is torch
    assert not compat.is_mmdeploy_patched() or not any(needs.values())
    assert compat.patch_mmdeploy() == needs
    assert compat.patch_mmdeploy() == dict(
        torchscript_export=False, cast_long=False)
    assert compat.is_mmdeploy_patched()


def test_export_call_defaults_to_torchscript(compat, monkeypatch):
    export = sys.modules[EXPORT_MODULE]
    calls = []
    monkeypatch.setattr(torch.onnx, 'export',
                        lambda *args, **kwargs: calls.append((args, kwargs)))
    compat.unpatch_mmdeploy()
    monkeypatch.setattr(compat, '_defaults_to_dynamo', lambda: True)
    compat.patch_mmdeploy()
    export.torch.onnx.export('model', ('x', ), 'f.onnx', opset_version=11)
    export.torch.onnx.export('model', ('x', ), 'f.onnx', dynamo=True)
    assert calls == [(('model', ('x', ), 'f.onnx'),
                      dict(opset_version=11, dynamo=False)),
                     (('model', ('x', ), 'f.onnx'), dict(dynamo=True))]
    # everything else is torch's own
    assert export.torch.no_grad is torch.no_grad
    assert export.torch.Tensor is torch.Tensor
    assert export.torch.onnx.is_in_onnx_export is (
        torch.onnx.is_in_onnx_export)


def test_nothing_to_do_where_torch_needs_nothing(compat, monkeypatch):
    """Older torch: ``dynamo`` off by default, ``_cast_Long`` present."""
    opset9 = importlib.import_module('torch.onnx.symbolic_opset9')
    compat.unpatch_mmdeploy()
    own = object()
    monkeypatch.setattr(opset9, '_cast_Long', own, raising=False)
    monkeypatch.setattr(compat, '_defaults_to_dynamo', lambda: False)
    assert compat.mmdeploy_needs_patch() == dict(
        torchscript_export=False, cast_long=False)
    assert compat.patch_mmdeploy() == dict(
        torchscript_export=False, cast_long=False)
    assert sys.modules[EXPORT_MODULE].torch is torch
    assert opset9._cast_Long is own
    assert compat.is_mmdeploy_patched()
    compat.unpatch_mmdeploy()
    assert opset9._cast_Long is own


class _CastLong(torch.autograd.Function):
    """x.long(), exported through ``symbolic_opset9._cast_Long`` as
    mmdeploy's RoIAlign symbolic uses it."""

    @staticmethod
    def forward(ctx, x):
        return x.long()

    @staticmethod
    def symbolic(g, x):
        from torch.onnx.symbolic_opset9 import _cast_Long
        return _cast_Long(g, x, False)


class _CastLongModule(nn.Module):

    def forward(self, x):
        return _CastLong.apply(x)


def test_cast_long_is_an_int64_cast(compat, tmp_path):
    onnx = pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    path = str(tmp_path / 'cast.onnx')
    x = torch.tensor([[1.7, -2.2, 0.0], [3.5, -0.5, 7.9]])
    torch.onnx.export(
        _CastLongModule(), (x, ), path, opset_version=11, dynamo=False)
    nodes = onnx.load(path).graph.node
    assert [(node.op_type, node.attribute[0].i)
            for node in nodes] == [('Cast', onnx.TensorProto.INT64)]
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    (out, ) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, x.long().numpy())


def test_clear_error_without_mmdeploy(monkeypatch):
    for name in list(sys.modules):
        if name == 'mmdeploy' or name.startswith('mmdeploy.'):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'mmdeploy', None)
    if COMPAT in sys.modules:
        with pytest.raises(ImportError, match=INSTALL_HINT):
            sys.modules[COMPAT].patch_mmdeploy()
        monkeypatch.delitem(sys.modules, COMPAT)
    with pytest.raises(ImportError, match='mmdeploy, which is not installed'):
        importlib.import_module(COMPAT)


def _image(seed, height, width):
    """A random (height, width, 3) uint8 image."""
    return np.random.RandomState(seed).randint(
        0, 256, (height, width, 3), dtype=np.uint8)


def _match(dets, labels, ref_dets, ref_labels, count):
    """For each of the ``count`` top rows of ``dets`` (n, 5) the row of
    ``ref_dets`` with the same label and the nearest box; the rows must
    agree within the tolerances (ties in score may order them otherwise)."""
    matched = []
    for box, label in zip(dets[:count], labels[:count]):
        distance = np.abs(ref_dets[:, :4] - box[:4]).max(axis=1)
        distance[ref_labels != label] = np.inf
        row = int(distance.argmin())
        assert distance[row] <= BOX_ATOL, (box, ref_dets[:count])
        assert abs(ref_dets[row, 4] - box[4]) <= SCORE_ATOL
        matched.append(row)
    assert len(set(matched)) == len(matched)
    return matched


@pytest.mark.slow
def test_torch2onnx_involution_mask_rcnn(tmp_path, compat):
    """mmdeploy's torch2onnx of the demo Mask R-CNN (RedNet-26, involution
    FPN, RPN and mask heads) with random weights, at 128x128; ONNX Runtime
    against PyTorch at that size and another (dynamic axes)."""
    apis = _mmdeploy_apis()
    import onnx
    import onnxruntime
    from mmdeploy.core import RewriterContext, patch_model
    from mmengine import Config

    deploy_cfg = Config(INSTANCE_SEG_ORT_DYNAMIC)
    model_cfg = Config.fromfile(str(MASK_RCNN))
    model_cfg.test_pipeline[1].scale = (128, 128)
    processor = apis.build_task_processor(model_cfg, deploy_cfg, 'cpu')
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = processor.build_pytorch_model()
    checkpoint = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict()), checkpoint)

    assert compat.is_mmdeploy_patched()
    apis.torch2onnx(
        _image(0, 128, 128), str(tmp_path), 'end2end.onnx', deploy_cfg,
        model_cfg, checkpoint, 'cpu')
    path = str(tmp_path / 'end2end.onnx')
    # standard operators only: plain ONNX Runtime, no mmdeploy ops library
    assert {node.domain for node in onnx.load(path).graph.node} == {''}
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])

    rewritten = patch_model(model, cfg=deploy_cfg, backend='onnxruntime')
    for height, width in [(128, 128), (64, 128)]:
        data, inputs = processor.create_input(
            _image(1, height, width),
            data_preprocessor=model.data_preprocessor)
        assert inputs.shape == (1, 3, height, width)
        dets, labels, masks = (
            out[0] for out in session.run(None, {'input': inputs.numpy()}))
        # what was exported: the model under mmdeploy's rewrites
        with RewriterContext(
                cfg=deploy_cfg, backend='onnxruntime',
                opset=11), torch.no_grad():
            ref_dets, ref_labels, ref_masks = (
                out[0].numpy() for out in rewritten(
                    inputs, data['data_samples'], mode='predict'))
        assert 10 <= len(dets) == len(ref_dets)
        rows = _match(dets, labels, ref_dets, ref_labels, count=TOP)
        np.testing.assert_allclose(
            masks[:TOP], ref_masks[rows], rtol=0, atol=MASK_ATOL)

        # mmdet's own predict: mmdeploy's RPN runs one NMS over all levels
        # where mmdet's runs one per level, so only its top detections are
        # bound to be the same
        with torch.no_grad():
            stock = model.predict(
                inputs, data['data_samples'], rescale=False)[0].pred_instances
        stock_dets = torch.cat([stock.bboxes, stock.scores[:, None]],
                               dim=1).numpy()
        _match(stock_dets, stock.labels.numpy(), dets, labels, count=3)
