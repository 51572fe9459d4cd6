"""Train a few iterations of a detector config; time them, check the losses.

``tools/dev/gpu/run.sh`` runs it on the demo config, with and without AMP::

    python tools/dev/gpu/demo_iterations.py \\
        configs/demo/mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py \\
        --iters 20 [--amp] [--device cuda|cpu] --work-dir DIR --out JSON

The config is loaded as ``tools/train.py`` loads it
(:mod:`mmplug_involution.apis`) and
trained with mmengine's Runner for ``--iters`` iterations: no validation or
test loop, no checkpoints, a log line every iteration, 2 data-loader
workers. ``--amp`` trains with ``AmpOptimWrapper`` (float16 on CUDA;
mmengine's AmpOptimWrapper needs a GPU, so ``--amp --device cpu`` is
refused). ``--device cpu`` hides the GPUs (``CUDA_VISIBLE_DEVICES=''``);
``--device cuda`` (the default) requires one. The demo's shapes dataset
(the config's data root, e.g. ``data/coco_shapes/``) is generated with
``tools/data/generate_shapes.py coco`` first if it is missing (about a
minute). Relative paths are resolved from the current directory; the run
itself happens in the repository root (where the configs' ``data/`` is).

mmcv built without its CUDA ops (CPU ops only) cannot run ``nms`` or
``roi_align`` on CUDA tensors. When a tiny CUDA ``mmcv.ops.nms`` fails, this
process routes them to torchvision instead, and says so: every
``roi_layer`` of the config gets ``use_torchvision=True`` (mmcv's RoIAlign
then calls ``torchvision.ops.roi_align``), the ``roi_align`` that mmdet's
mask targets use (``mmdet.structures.mask.structures.roi_align``) sends CUDA
tensors to torchvision, and the ``ext_module`` of ``mmcv.ops.nms`` sends the
``nms`` of CUDA tensors to ``torchvision.ops.nms`` (everything else is
mmcv's).

Writes JSON to ``--out``: config, device, amp, iters, per-iteration
seconds (wall time from one iteration's end to the next's, data loading
included, CUDA synchronised) and their median without the first 3
(``seconds_per_iter_median``; over all iterations when there are 3 or
fewer), total losses (first, last, all), peak CUDA memory allocated in MiB
(``peak_mib``; null on CPU), ``torchvision_fallback``, the involution
backend and package versions. Exit status 0 on success, 1 when a loss is
not finite (the run stops there; the JSON is still written) or the device
is not usable.
"""
import argparse
import importlib
import json
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ROOT / 'tools'
SKIPPED_FIRST = 3  # warm-up iterations left out of the median
NUM_WORKERS = 2


class NonFiniteLoss(RuntimeError):
    """A training loss was NaN or infinite."""


# torchvision stand-ins for mmcv's nms and roi_align (CUDA ops) ----------


def torchvision_nms(boxes, scores, iou_threshold: float, offset: int = 0):
    """``mmcv._ext.nms`` (the indices of the kept boxes, highest score
    first) by ``torchvision.ops.nms``; in float32. ``offset`` 1 (box sides
    ``x2 - x1 + 1``) moves the far corners by 1."""
    import torch
    import torchvision
    boxes = boxes.float()
    if offset:
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + offset], dim=1)
    return torchvision.ops.nms(boxes, scores.float(), float(iou_threshold))


def torchvision_roi_align(input,
                          rois,
                          output_size,
                          spatial_scale: float = 1.0,
                          sampling_ratio: int = 0,
                          pool_mode: str = 'avg',
                          aligned: bool = True):
    """``mmcv.ops.roi_align`` (its signature) by ``torchvision.ops.
    roi_align``; average pooling only."""
    from torch.nn.modules.utils import _pair
    from torchvision.ops import roi_align
    if pool_mode != 'avg':
        raise ValueError(f'torchvision roi_align averages; got pool_mode='
                         f'{pool_mode!r}')
    return roi_align(input, rois, _pair(output_size), float(spatial_scale),
                     int(sampling_ratio), bool(aligned))


class CudaNmsByTorchvision:
    """Stands in for ``mmcv.ops.nms.ext_module``: ``nms`` of CUDA tensors
    by torchvision, everything else by mmcv's extension."""

    def __init__(self, ext_module):
        self.ext_module = ext_module

    def nms(self, boxes, scores, iou_threshold, offset=0):
        if boxes.is_cuda:
            return torchvision_nms(boxes, scores, iou_threshold, offset)
        return self.ext_module.nms(
            boxes, scores, iou_threshold=iou_threshold, offset=offset)

    def __getattr__(self, name):
        return getattr(self.ext_module, name)


def mmcv_cuda_ops_error() -> Optional[str]:
    """``None`` when ``mmcv.ops.nms`` runs on two tiny CUDA boxes, else
    the error it raised."""
    import torch
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 4., 4.], [1., 1., 5., 5.]], device='cuda')
    scores = torch.tensor([0.9, 0.8], device='cuda')
    try:
        nms(boxes, scores, 0.5)
        torch.cuda.synchronize()
    except Exception as error:  # a CPU-only build: no CUDA kernel
        return f'{type(error).__name__}: {error}'.strip().splitlines()[0]
    return None


def use_torchvision_ops(cfg) -> int:
    """Route this process's CUDA nms and roi_align to torchvision (see the
    module docstring); returns how many ``roi_layer`` settings changed."""
    from mmplug_involution.apis import iter_config_dicts
    changed = 0
    for node in iter_config_dicts(cfg.get('model', {})):
        layer = node.get('roi_layer')
        if isinstance(layer, dict) and layer.get('type') == 'RoIAlign':
            layer['use_torchvision'] = True
            changed += 1
    nms_module = importlib.import_module('mmcv.ops.nms')
    if not isinstance(nms_module.ext_module, CudaNmsByTorchvision):
        nms_module.ext_module = CudaNmsByTorchvision(nms_module.ext_module)
    structures = importlib.import_module('mmdet.structures.mask.structures')
    mmcv_roi_align = structures.roi_align
    if not getattr(mmcv_roi_align, 'routes_cuda_to_torchvision', False):

        def roi_align(input,
                      rois,
                      output_size,
                      spatial_scale=1.0,
                      sampling_ratio=0,
                      pool_mode='avg',
                      aligned=True):
            align = torchvision_roi_align if input.is_cuda else mmcv_roi_align
            return align(input, rois, output_size, spatial_scale,
                         sampling_ratio, pool_mode, aligned)

        roi_align.routes_cuda_to_torchvision = True
        structures.roi_align = roi_align
    return changed


def check_torchvision_cuda_ops() -> Optional[str]:
    """``None`` when torchvision's nms and roi_align run on CUDA tensors,
    else the error."""
    import torch
    boxes = torch.tensor([[0., 0., 4., 4.], [1., 1., 5., 5.]], device='cuda')
    try:
        torchvision_nms(boxes, torch.tensor([0.9, 0.8], device='cuda'), 0.5)
        torchvision_roi_align(
            torch.ones(1, 1, 8, 8, device='cuda'),
            torch.tensor([[0., 0., 0., 4., 4.]], device='cuda'), 2)
        torch.cuda.synchronize()
    except Exception as error:
        return f'{type(error).__name__}: {error}'.strip().splitlines()[0]
    return None


# the run ----------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Exit status 0 on success, 1 on a non-finite loss or an '
        'unusable device.')
    parser.add_argument('config', help='an mmdet config (the demo config)')
    parser.add_argument(
        '--iters', type=int, required=True, help='iterations to train (>= 1)')
    parser.add_argument(
        '--amp', action='store_true', help='AmpOptimWrapper (float16)')
    parser.add_argument(
        '--device',
        choices=('cuda', 'cpu'),
        default='cuda',
        help='where to train (default cuda, which must be there)')
    parser.add_argument(
        '--work-dir', required=True, help='the runner\'s work dir (logs)')
    parser.add_argument('--out', required=True, help='the JSON to write')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error('--iters must be at least 1')
    if args.amp and args.device == 'cpu':
        parser.error('--amp needs --device cuda: mmengine\'s '
                     'AmpOptimWrapper asserts that a GPU is available')
    return args


def median_seconds(seconds: List[float]) -> Optional[float]:
    """The median without the first :data:`SKIPPED_FIRST` iterations; of
    all of them when there are no more."""
    kept = seconds[SKIPPED_FIRST:] or seconds
    return statistics.median(kept) if kept else None


def ensure_dataset(cfg) -> None:
    """Generate the demo's COCO shapes dataset into the config's data root
    if its annotation files are missing."""
    dataset = cfg.train_dataloader.dataset
    data_root = dataset.get('data_root') or ''
    anns = [osp.join(data_root, dataset.ann_file)]
    if cfg.get('val_dataloader'):  # run_demo.sh's mark: val is written last
        val = cfg.val_dataloader.dataset
        anns.append(osp.join(val.get('data_root') or '', val.ann_file))
    if all(osp.isfile(ann) for ann in anns):
        return
    if dataset.get('type') != 'CocoDataset' or not data_root:
        raise SystemExit(f'error: {anns[0]} is missing, and only a COCO '
                         'shapes dataset can be generated here.')
    print(
        f'{anns[-1]} is missing: generating the shapes dataset into '
        f'{data_root} (tools/data/generate_shapes.py coco)',
        flush=True)
    done = subprocess.run([
        sys.executable,
        str(TOOLS / 'data' / 'generate_shapes.py'), 'coco', data_root
    ])
    if done.returncode:
        raise SystemExit(f'error: generating {data_root} failed (exit '
                         f'status {done.returncode}).')


def adapt_config(cfg, iters: int, amp: bool) -> None:
    """Train ``iters`` iterations, no evaluation, no checkpoints."""
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg',
                'test_dataloader', 'test_evaluator'):
        cfg[key] = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.train_dataloader.num_workers = NUM_WORKERS
    cfg.train_dataloader.persistent_workers = False
    cfg.resume = False
    cfg.load_from = None
    if amp and cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def make_recording_hook(cuda: bool):
    """An mmengine hook recording per-iteration seconds and losses."""
    import torch
    from mmengine.hooks import Hook

    class RecordIterations(Hook):
        priority = 'VERY_LOW'

        def __init__(self):
            self.seconds: List[float] = []
            self.losses: List[float] = []
            self.last_parts = {}
            self._start = None

        def _now(self) -> float:
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if self._start is None:
                self._start = self._now()

        def after_train_iter(self,
                             runner,
                             batch_idx,
                             data_batch=None,
                             outputs=None):
            now = self._now()
            self.seconds.append(now - self._start)
            self._start = now
            parts = {
                key: float(torch.as_tensor(value).detach())
                for key, value in outputs.items()
            }
            self.losses.append(parts['loss'])
            self.last_parts = parts
            if not math.isfinite(parts['loss']):
                raise NonFiniteLoss(
                    f'iteration {len(self.losses)}: the loss is '
                    f'{parts["loss"]} ({parts})')

    return RecordIterations()


def versions(device: str) -> dict:
    """Versions of what the run used."""
    import mmcv
    import mmdet
    import mmengine
    import torch
    import torchvision

    import mmplug_involution
    found = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        torchvision=torchvision.__version__,
        mmcv=mmcv.__version__,
        mmdet=mmdet.__version__,
        mmengine=mmengine.__version__,
        mmplug_involution=mmplug_involution.__version__)
    try:
        import cupy
        found['cupy'] = cupy.__version__
    except ImportError:
        found['cupy'] = None
    if device == 'cuda':
        found['gpu'] = torch.cuda.get_device_name()
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    config = osp.abspath(args.config)
    work_dir = osp.abspath(args.work_dir)
    out = osp.abspath(args.out)
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # before CUDA initialises
    os.chdir(ROOT)  # the configs' data roots are relative to it
    import torch
    cuda = args.device == 'cuda'
    if cuda and not torch.cuda.is_available():
        print(
            'FAIL: --device cuda needs a CUDA device; torch '
            f'{torch.__version__} (CUDA {torch.version.cuda}) sees none.',
            file=sys.stderr)
        return 1
    if not cuda and torch.cuda.is_available():
        print(
            'FAIL: --device cpu: CUDA was initialised before '
            'CUDA_VISIBLE_DEVICES could hide it.',
            file=sys.stderr)
        return 1

    from mmplug_involution.apis import (build_runner,
                                        kill_forked_children_with_parent,
                                        launch, load_tool_config)
    from mmplug_involution.ops import select_backend
    kill_forked_children_with_parent()  # data-loader workers
    cfg = load_tool_config(
        argparse.Namespace(
            config=config,
            work_dir=work_dir,
            cfg_options=None,
            launcher='none',
            local_rank=0))
    adapt_config(cfg, args.iters, args.amp)
    ensure_dataset(cfg)

    fallback_reason = None
    if cuda:
        fallback_reason = mmcv_cuda_ops_error()
        if fallback_reason is not None:
            layers = use_torchvision_ops(cfg)
            print(
                'torchvision fallback: mmcv has no CUDA nms/roi_align here '
                f'({fallback_reason}); this process runs nms, roi_align and '
                f'its {layers} RoIAlign layer(s) of CUDA tensors with '
                'torchvision.',
                flush=True)
            broken = check_torchvision_cuda_ops()
            if broken is not None:
                print(
                    'FAIL: neither mmcv nor torchvision runs nms/roi_align '
                    f'on CUDA tensors: torchvision: {broken}',
                    file=sys.stderr)
                return 1

    hook = make_recording_hook(cuda)

    def train():
        runner = build_runner(cfg)
        runner.register_hook(hook)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        runner.train()

    problem = None
    try:
        launch(cfg, 'none', train)
    except NonFiniteLoss as error:
        problem = str(error)
    result = dict(
        config=args.config,
        device=args.device,
        amp=args.amp,
        iters=args.iters,
        iters_done=len(hook.losses),
        seconds_per_iter=hook.seconds,
        seconds_per_iter_median=median_seconds(hook.seconds),
        median_skips_first=SKIPPED_FIRST
        if len(hook.seconds) > SKIPPED_FIRST else 0,
        losses=dict(
            first=hook.losses[0] if hook.losses else None,
            last=hook.losses[-1] if hook.losses else None,
            all=hook.losses,
            last_parts=hook.last_parts),
        loss_finite=problem is None,
        peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        torchvision_fallback=fallback_reason is not None,
        torchvision_fallback_reason=fallback_reason,
        involution_backend=select_backend(torch.device(args.device)),
        versions=versions(args.device))
    os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w') as file:
        json.dump(result, file, indent=2, allow_nan=True)
    median = result['seconds_per_iter_median']
    peak = result['peak_mib']
    print(
        f'{args.config}: {result["iters_done"]}/{args.iters} iterations on '
        f'{args.device}{" (AMP)" if args.amp else ""}, median '
        f'{median:.3f} s/iter, loss {result["losses"]["first"]:.4f} -> '
        f'{result["losses"]["last"]:.4f}' +
        (f', peak {peak:.0f} MiB' if peak is not None else '') +
        f'; wrote {out}',
        flush=True)
    if problem is not None:
        print(f'FAIL: the loss is not finite: {problem}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
