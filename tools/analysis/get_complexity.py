"""Print the parameters and FLOPs of a config's model.

FLOPs are multiply-adds (one multiply-add = one FLOP, as the involution and
ResNet papers count), traced by mmengine's FlopAnalyzer with this package's
handle for the involution op. Classifiers are counted whole (backbone, neck,
head), detectors through ``extract_feat``
(backbone + neck), segmentors through ``_forward`` (backbone, neck and
decode head; not the auxiliary head, which only trains).

Example:
    python tools/analysis/get_complexity.py \
        configs/rednet/rednet50_32xb64-warmup-coslr_in1k.py
    python tools/analysis/get_complexity.py CONFIG --shape 800 1216
"""
import argparse

from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

from mmplug_involution.analysis import model_complexity


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=[224, 224],
        help='input height and width (one value: square)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. model.backbone.'
        'depth=101')
    return parser.parse_args()


def main():
    args = parse_args()
    if len(args.shape) not in (1, 2):
        raise SystemExit('--shape takes one or two integers')
    height, width = (args.shape * 2)[:2]
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    result = model_complexity(model, (3, height, width))
    print(f'config:  {args.config}')
    print(f'input:   1x3x{height}x{width}; counted: {result["counted"]}')
    print(f'params:  {result["params"] / 1e6:.2f} M')
    print(f'FLOPs:   {result["flops"] / 1e9:.2f} G (multiply-adds)')
    if result['unsupported']:
        skipped = ', '.join(f'{k} x{v}'
                            for k, v in sorted(result['unsupported'].items()))
        print(f'not counted (no FLOP handle, element-wise ops): {skipped}')


if __name__ == '__main__':
    main()
