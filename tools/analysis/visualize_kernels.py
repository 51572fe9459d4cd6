"""Draw the K x K kernels a trained model generates at chosen pixels.

For every chosen ``Involution`` layer (and every ``XVolution`` with a local
attention, whose attention map is drawn the same way) the tool runs the model
on IMAGE, takes the kernel the layer generates (N, G*K*K, H_out, W_out) at
each chosen point and draws, per layer, the image with the points marked
beside one K x K heat map per point (group ``--group``; the paper's kernel
figure). Writes ``<out>/<layer name>.png`` and prints the files.

Example:
    python tools/analysis/visualize_kernels.py \\
        configs/demo/mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py \\
        work_dirs/demo/iter_1000.pth data/coco_shapes/val/000000.png \\
        --layers backbone.layer3.0.conv2 --out kernels/
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import mmcv  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mmplug_involution.apis import build_config_model  # noqa: E402
from mmplug_involution.apis import load_config_checkpoint  # noqa: E402
from mmplug_involution.layers import Involution, XVolution  # noqa: E402
from mmplug_involution.runtime import CheckpointError  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(
        description='Draw the involution kernels (and X-volution attention '
        'maps) a trained model generates at chosen pixels.')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument(
        '--layers',
        nargs='+',
        help='module names (default: every involution / local-attention '
        'X-volution layer of the backbone)')
    parser.add_argument(
        '--points',
        nargs='+',
        metavar='Y,X',
        help='pixels of the image, as y,x (default: a 3x3 grid)')
    parser.add_argument(
        '--group',
        type=int,
        default=0,
        help='which kernel group to draw (default 0)')
    parser.add_argument('--out', required=True, help='output folder')
    return parser.parse_args()


def kernel_layers(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """Every layer that generates a local kernel, by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, Involution) or (
            isinstance(module, XVolution) and module.attention_type != 'sa')
    }


def capture_kernels(model, layers: Dict[str, torch.nn.Module],
                    inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Run ``model``'s features on ``inputs`` (1, 3, H, W); each layer's
    generated kernel, (G, K*K, H_out, W_out)."""
    kernels, handles = {}, []
    for name, layer in layers.items():

        def hook(module, args, name=name):
            kernel = module.generate_kernel(args[0])[0]
            kernels[name] = kernel.reshape(module.groups, -1,
                                           *kernel.shape[-2:])

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            features = model.extract_feat if hasattr(model,
                                                     'extract_feat') else model
            features(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return kernels


def default_points(height: int, width: int) -> List[Tuple[int, int]]:
    return [(height * i // 4, width * j // 4) for i in (1, 2, 3)
            for j in (1, 2, 3)]


def draw(image, name: str, kernel: torch.Tensor, points, group: int,
         path: str) -> None:
    """The image with the points, and the K x K kernel at each point."""
    taps = kernel.shape[1]
    size = int(round(taps**0.5))
    height, width = image.shape[:2]
    out_h, out_w = kernel.shape[-2:]
    figure, axes = plt.subplots(
        1, len(points) + 1, figsize=(2.2 * (len(points) + 1), 2.6))
    axes[0].imshow(image)
    axes[0].set_title(name, fontsize=7)
    for index, (y, x) in enumerate(points):
        row = min(y * out_h // height, out_h - 1)
        col = min(x * out_w // width, out_w - 1)
        axes[0].plot(x, y, 'o', markersize=5, markeredgecolor='white')
        axes[0].annotate(str(index + 1), (x, y), color='white', fontsize=7)
        values = kernel[group, :, row, col].reshape(size, size)
        axes[index + 1].imshow(values.numpy(), cmap='coolwarm')
        axes[index + 1].set_title(f'{index + 1}: ({y}, {x})', fontsize=7)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main():
    args = parse_args()
    for kind, path in (('config', args.config),
                       ('checkpoint', args.checkpoint), ('image', args.image)):
        if not osp.isfile(path):
            sys.exit(f'visualize_kernels: error: {kind} {path} not found.')
    model = build_config_model(Config.fromfile(args.config))
    try:
        load_config_checkpoint(model, args.checkpoint, args.config)
    except (CheckpointError, ValueError) as error:
        sys.exit(f'visualize_kernels: error: {error}')
    model.eval()
    available = kernel_layers(model)
    if not available:
        sys.exit('visualize_kernels: error: the model has no involution or '
                 'local-attention X-volution layer.')
    names = args.layers or [n for n in available if n.startswith('backbone')]
    unknown = [name for name in names if name not in available]
    if unknown:
        sys.exit(f'visualize_kernels: error: {", ".join(unknown)} generate(s) '
                 'no kernel; choose from: ' + ', '.join(available))
    image = mmcv.imread(args.image, channel_order='rgb')
    height, width = image.shape[:2]
    try:
        points = [tuple(int(v) for v in p.split(',')) for p in args.points
                  ] if args.points else default_points(height, width)
    except ValueError:
        sys.exit('visualize_kernels: error: --points take y,x pairs of ints.')
    if any(not (0 <= y < height and 0 <= x < width) for y, x in points):
        sys.exit(f'visualize_kernels: error: a point lies outside the '
                 f'{height}x{width} image.')
    # the model's own normalisation (mean, std, channel order, padding)
    tensor = torch.from_numpy(mmcv.imread(args.image)).permute(2, 0, 1)
    inputs = model.data_preprocessor(dict(inputs=[tensor]), False)['inputs']
    kernels = capture_kernels(model, {n: available[n] for n in names}, inputs)
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        kernel = kernels[name]
        if not 0 <= args.group < kernel.shape[0]:
            sys.exit(f'visualize_kernels: error: {name} has '
                     f'{kernel.shape[0]} groups; --group {args.group}.')
        path = osp.join(args.out, f'{name}.png')
        # the kernel grid covers the padded input: map points there
        scale_h = inputs.shape[2] / height
        scale_w = inputs.shape[3] / width
        draw(
            image, name,
            kernel[:, :, :round(kernel.shape[2] /
                                scale_h), :round(kernel.shape[3] / scale_w)],
            points, args.group, path)
        print(path)


if __name__ == '__main__':
    main()
