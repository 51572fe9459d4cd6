"""The Python drivers of the GPU validation kit (tools/dev/gpu/), on the CPU.

``sanitize_kernels.py`` only runs for real on a GPU: here its float64
reference is checked against the package's PyTorch backend, its case logic
(NaN poisoning, index-type forcing, error measure) against a CPU stand-in
for the cupy backend, and its refusal without CUDA. ``demo_iterations.py``
trains two CPU iterations (slow), and its torchvision stand-ins for mmcv's
CUDA nms/roi_align are compared with mmcv's CPU ops.
"""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmplug_involution.ops import involution2d, involution_output_size
from mmplug_involution.ops.backends import pytorch as pytorch_backend
from .common import ROOT, TOOLS, run_script, tool_module

sanitize = tool_module('sanitize_kernels', 'dev/gpu')
demo = tool_module('demo_iterations', 'dev/gpu')
DEMO_CONFIG = ('configs/demo/'
               'mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py')

# sanitize_kernels.py -----------------------------------------------------


def test_sanitize_cases_are_small_odd_shapes():
    cases = sanitize.cases()
    assert {(c.kernel_size, c.stride, c.dilation)
            for c in cases} >= {(3, 1, 1), (7, 2, 1), (3, 1, 2)}
    for case in cases:
        for size, out in ((sanitize.HEIGHT, case.out_height),
                          (sanitize.WIDTH, case.out_width)):
            assert out == involution_output_size(size, case.kernel_size,
                                                 case.stride, case.padding,
                                                 case.dilation) > 0
        assert case.padding == case.dilation * (case.kernel_size - 1) // 2
        assert case.kernel_shape[1] == 2 * case.kernel_size**2
    assert sanitize.CHANNELS // sanitize.GROUPS == 16
    assert sanitize.HEIGHT % 2 == sanitize.WIDTH % 2 == 1


@pytest.mark.parametrize('index', range(len(sanitize.WINDOWS)))
def test_sanitize_reference_equals_pytorch_backend(index, monkeypatch):
    monkeypatch.setenv('MMPLUG_INVOLUTION_BACKEND', 'pytorch')
    case = sanitize.cases()[index]
    window = (case.kernel_size, case.stride, case.padding, case.dilation)
    generator = torch.Generator().manual_seed(index)
    inputs = sanitize.random_inputs(case, torch.float64, generator)
    x = inputs['input'].requires_grad_()
    w = inputs['kernel'].requires_grad_()
    out = involution2d(x, w, *window)
    ref = sanitize.reference_forward(inputs['input'], inputs['kernel'],
                                     *window)
    assert out.shape == ref.shape == case.output_shape
    torch.testing.assert_close(ref, out, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out, (x, w), inputs['grad_output'])
    ref_grads = sanitize.reference_backward(inputs['grad_output'],
                                            inputs['input'], inputs['kernel'],
                                            *window)
    for ref_grad, grad in zip(ref_grads, grads):
        torch.testing.assert_close(ref_grad, grad, rtol=1e-12, atol=1e-12)


def test_sanitize_loads_the_backend_standalone():
    backend = sanitize.load_backend()
    assert backend.__file__ == str(sanitize.BACKEND_PATH)
    assert backend.KERNEL_NAMES == sanitize.KERNELS[:3]
    assert backend.INDEX_TYPES == sanitize.INDEX_TYPES
    assert isinstance(backend.MAX_INT32_NUMEL, int)
    for name in ('forward', 'backward', 'generated_forward', '_get_function',
                 'cupy_import_error'):
        assert callable(getattr(backend, name))


class CpuStandIn:
    """The cupy backend's interface, computed by the PyTorch backend on the
    CPU; ``_get_function`` is called as the real ``_launch`` calls it."""
    MAX_INT32_NUMEL = 2**30

    def __init__(self, skip_last_element=False):
        self.skip_last_element = skip_last_element

    def _get_function(self, name, dtype, index_type, device_index):
        return None

    def _write(self, name, result, dest, *tensors):
        largest = max(t.numel() for t in (dest, *tensors))
        index_type = 'int' if largest <= self.MAX_INT32_NUMEL else 'long long'
        self._get_function(name, dest.dtype, index_type, 0)
        if self.skip_last_element:  # a kernel that misses one element
            dest.view(-1)[:-1] = result.reshape(-1)[:-1].to(dest.dtype)
        else:
            dest.copy_(result)
        return dest

    def forward(self, input, kernel, k, s, p, d, out=None):
        result = pytorch_backend.forward(input.float(), kernel.float(), k, s,
                                         p, d)
        return self._write('involution_forward', result, out, input, kernel)

    def backward(self, grad_output, input, kernel, k, s, p, d, grad_input,
                 grad_kernel):
        dx, dw = pytorch_backend.backward(grad_output.float(), input.float(),
                                          kernel.float(), k, s, p, d)
        return (self._write('involution_grad_input', dx, grad_input,
                            grad_output, kernel),
                self._write('involution_grad_kernel', dw, grad_kernel,
                            grad_output, input))

    def generated_forward(self, input, reduced, weight, bias, k, s, p, d):
        kernel = torch.nn.functional.conv2d(reduced.float(), weight.float(),
                                            bias.float()).to(input.dtype)
        out = input.new_empty(*input.shape[:2], *kernel.shape[-2:])
        return self.forward(input, kernel, k, s, p, d, out=out)


@pytest.mark.parametrize('dtype', sanitize.DTYPES)
@pytest.mark.parametrize('index_type', sanitize.INDEX_TYPES)
def test_sanitize_run_case_with_cpu_stand_in(dtype, index_type):
    backend = CpuStandIn()
    recorder = sanitize.LaunchRecorder(backend)
    generator = torch.Generator().manual_seed(0)
    for case in sanitize.cases():
        inputs = sanitize.random_inputs(case, dtype, generator)
        results = sanitize.run_case(backend, recorder, case, dtype, index_type,
                                    inputs, torch.device('cpu'))
        assert sorted(results) == sorted(sanitize.KERNELS)
        for kernel, (error, launched) in results.items():
            assert launched == index_type, kernel
            assert error <= sanitize.TOLERANCES[dtype], (kernel, error)
    assert backend.MAX_INT32_NUMEL == 2**30  # restored


def test_sanitize_run_case_catches_an_unwritten_element():
    backend = CpuStandIn(skip_last_element=True)
    recorder = sanitize.LaunchRecorder(backend)
    case = sanitize.cases()[0]
    inputs = sanitize.random_inputs(case, torch.float32,
                                    torch.Generator().manual_seed(0))
    results = sanitize.run_case(backend, recorder, case, torch.float32, 'int',
                                inputs, torch.device('cpu'))
    for kernel in sanitize.KERNELS[:3]:  # the poisoned outputs
        assert results[kernel][0] == math.inf


def test_sanitize_relative_error():
    ref = torch.tensor([1.0, -4.0], dtype=torch.float64)
    assert sanitize.relative_error(ref.float(), ref) == 0
    assert sanitize.relative_error(torch.tensor([1.0, -3.0]),
                                   ref) == pytest.approx(0.25)
    assert sanitize.relative_error(torch.tensor([math.nan, -4.0]),
                                   ref) == math.inf
    assert sanitize.relative_error(torch.zeros(3), ref) == math.inf


def test_sanitize_main_needs_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert sanitize.main([]) == 1
    err = capsys.readouterr().err
    assert 'needs a CUDA device and CuPy' in err
    assert err.startswith('FAIL')


# demo_iterations.py: torchvision stand-ins ------------------------------


def _boxes(count, seed):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 50
    size = torch.rand(count, 2, generator=generator) * 20 + 1
    scores = torch.rand(count, generator=generator)
    return torch.cat([corner, corner + size], dim=1), scores


@pytest.mark.parametrize('offset', [0, 1])
@pytest.mark.parametrize('iou', [0.3, 0.7])
def test_torchvision_nms_equals_mmcv(offset, iou):
    from mmcv.ops import nms as mmcv_nms
    boxes, scores = _boxes(200, seed=offset)
    expected = mmcv_nms(boxes, scores, iou, offset=offset)[1]
    kept = demo.torchvision_nms(boxes, scores, iou, offset)
    assert 0 < len(kept) < len(boxes)
    assert torch.equal(kept, expected)
    assert kept.dtype == torch.long


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 1, 2])
def test_torchvision_roi_align_equals_mmcv(aligned, sampling_ratio):
    from mmcv.ops import roi_align as mmcv_roi_align
    generator = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(2, 3, 20, 24, generator=generator)
    boxes, _ = _boxes(10, seed=3)
    rois = torch.cat([(torch.arange(10) % 2).float()[:, None], boxes / 3],
                     dim=1)
    args = ((7, 5), 0.5, sampling_ratio, 'avg', aligned)
    expected = mmcv_roi_align(features, rois, *args)
    got = demo.torchvision_roi_align(features, rois, *args)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='pool_mode'):
        demo.torchvision_roi_align(features, rois, 7, 1.0, 0, 'max')


@pytest.fixture
def restored_mmcv_ops(monkeypatch):
    """Undo :func:`use_torchvision_ops` after the test."""
    import importlib
    nms_module = importlib.import_module('mmcv.ops.nms')
    structures = importlib.import_module('mmdet.structures.mask.structures')
    monkeypatch.setattr(nms_module, 'ext_module', nms_module.ext_module)
    monkeypatch.setattr(structures, 'roi_align', structures.roi_align)
    return nms_module, structures


def test_use_torchvision_ops(restored_mmcv_ops, monkeypatch):
    from mmcv.ops import RoIAlign
    from mmcv.ops import nms as mmcv_nms
    from mmdet.structures.mask import BitmapMasks
    nms_module, structures = restored_mmcv_ops
    cfg = Config.fromfile(ROOT / DEMO_CONFIG)
    boxes, scores = _boxes(100, seed=5)
    expected_nms = mmcv_nms(boxes, scores, 0.5)[1]
    masks = BitmapMasks(np.random.RandomState(0).rand(3, 32, 40) > 0.5, 32, 40)
    crop_boxes = np.array([[2, 3, 20, 30], [0, 0, 40, 32], [5, 5, 9, 12]],
                          dtype=np.float32)
    expected_masks = masks.crop_and_resize(crop_boxes, (14, 14),
                                           np.arange(3)).masks

    assert demo.use_torchvision_ops(cfg) == 2
    assert demo.use_torchvision_ops(cfg) == 2  # twice: wrapped once
    assert isinstance(nms_module.ext_module, demo.CudaNmsByTorchvision)
    assert not isinstance(nms_module.ext_module.ext_module,
                          demo.CudaNmsByTorchvision)
    roi_head = cfg.model.roi_head
    for extractor in (roi_head.bbox_roi_extractor,
                      roi_head.mask_roi_extractor):
        assert extractor.roi_layer.use_torchvision is True
    layer = RoIAlign(
        **{
            k: v
            for k, v in
            cfg.model.roi_head.mask_roi_extractor.roi_layer.items()
            if k != 'type'
        })
    assert layer.use_torchvision
    # CPU tensors still take mmcv's ops, with the same results
    assert torch.equal(mmcv_nms(boxes, scores, 0.5)[1], expected_nms)
    assert nms_module.ext_module.nms_match is not None  # passed through
    got_masks = masks.crop_and_resize(crop_boxes, (14, 14), np.arange(3)).masks
    assert np.array_equal(got_masks, expected_masks)
    # CUDA tensors go to torchvision
    calls = []
    monkeypatch.setattr(demo, 'torchvision_nms', lambda *args: calls.append(
        ('nms', args)))
    monkeypatch.setattr(demo, 'torchvision_roi_align',
                        lambda *args: calls.append(('roi_align', args)))
    cuda_like = SimpleNamespace(is_cuda=True)
    nms_module.ext_module.nms(cuda_like, 'scores', iou_threshold=0.5, offset=0)
    structures.roi_align(cuda_like, 'rois', (28, 28), 1.0, 0, 'avg', True)
    assert calls == [('nms', (cuda_like, 'scores', 0.5, 0)),
                     ('roi_align', (cuda_like, 'rois', (28, 28), 1.0, 0, 'avg',
                                    True))]


# demo_iterations.py: the run ---------------------------------------------


def test_demo_refuses_amp_on_cpu(capsys):
    with pytest.raises(SystemExit) as exit:
        demo.parse_args([
            DEMO_CONFIG, '--iters', '2', '--amp', '--device', 'cpu',
            '--work-dir', 'w', '--out', 'o.json'
        ])
    assert exit.value.code == 2
    assert '--amp needs --device cuda' in capsys.readouterr().err


def test_demo_needs_cuda_for_device_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # main() moves to the repository root
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert demo.main([
        DEMO_CONFIG, '--iters', '2', '--work-dir',
        str(tmp_path), '--out',
        str(tmp_path / 'o.json')
    ]) == 1
    assert 'needs a CUDA device' in capsys.readouterr().err
    assert not (tmp_path / 'o.json').exists()


def test_demo_median_and_config():
    assert demo.median_seconds([9, 9, 9, 1, 2, 3]) == 2
    assert demo.median_seconds([5, 1]) == 3
    cfg = Config.fromfile(ROOT / DEMO_CONFIG)
    demo.adapt_config(cfg, 7, amp=True)
    assert cfg.train_cfg.max_iters == 7
    assert cfg.val_dataloader is None and cfg.test_evaluator is None
    assert cfg.default_hooks.checkpoint is None
    assert cfg.default_hooks.logger.interval == 1
    assert cfg.train_dataloader.num_workers == 2
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


@pytest.mark.slow
def test_demo_iterations_on_cpu(tmp_path):
    out = tmp_path / 'demo.json'
    done = run_script(TOOLS / 'dev' / 'gpu' / 'demo_iterations.py',
                      DEMO_CONFIG, '--iters', 2, '--device', 'cpu',
                      '--work-dir', tmp_path / 'work', '--out', out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result['device'] == 'cpu' and result['amp'] is False
    assert result['iters'] == result['iters_done'] == 2
    assert len(result['seconds_per_iter']) == 2
    assert result['seconds_per_iter_median'] > 0
    assert math.isfinite(result['losses']['first'])
    assert math.isfinite(result['losses']['last'])
    assert result['loss_finite'] is True
    assert result['peak_mib'] is None
    assert result['torchvision_fallback'] is False
    assert result['versions']['torch'] == torch.__version__
    assert 'wrote' in done.stdout
