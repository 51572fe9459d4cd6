"""MobileNetV2 with DCD in the inverted residuals' 1x1 convs (the DCD
authors' MobileNetV2)."""
from mmpretrain.models.backbones import MobileNetV2

from ...layers.conv_attributes import build_conv_like, check_layer_cfg
from ...registry import MODELS


def dcd_mobilenet_v2_latent_dim(features: int, out_channels: int,
                                reduction: int) -> int:
    """The DCD authors' latent size L for a MobileNetV2 1x1 conv.

    ``L = min(F, C_out) // r``, ``r`` doubled from ``reduction`` while
    ``L^2 > 2 F``, and at least 4; ``F`` is the features the squeeze reads
    (``C_in * pool_size^2``). Their expansions start from ``r = 8``, their
    projections from ``r = 2``.
    """
    latent = min(features, out_channels) // reduction
    while latent**2 > 2 * features:
        reduction *= 2
        latent = min(features, out_channels) // reduction
    return max(latent, 4)


@MODELS.register_module()
class DCDMobileNetV2(MobileNetV2):
    """mmpretrain's ``MobileNetV2`` with DCD in its inverted residuals.

    As the DCD authors built it (Li et al. 2021, github liyunsheng13/dcd):
    in every block that expands (t = 6), the 1x1 expansion and the 1x1
    projection are :class:`~mmplug_involution.layers.DCDConv2d` layers
    (``dcd_cfg``); the stem, the depthwise convs, the first block (t = 1)
    and the last 1x1 conv stay plain. Each DCD gets the authors' sizes: the
    expansion squeezes the input pooled to ``expand_pool_size`` x
    ``expand_pool_size``, the projection the global average, and the latent
    size L follows :func:`dcd_mobilenet_v2_latent_dim` (8 to 40 at width
    1.0). The squeeze width is ``dcd_cfg``'s ``squeeze_ratio`` (the
    authors' ``fc_squeeze``). Module names are mmpretrain's: the DCDs are
    ``layerS.B.conv.0.conv`` and ``layerS.B.conv.2.conv``.

    Args:
        widen_factor (float): width multiplier. Default 1.0.
        dcd_cfg (dict): the DCD layer config; ``pool_size`` and
            ``latent_dim`` are set per conv. Default
            ``dict(type='DCDConv2d', squeeze_ratio=8)``.
        expand_pool_size (int): pooled size the expansions squeeze. Default
            2.
        **kwargs: the other ``MobileNetV2`` arguments (``out_indices``,
            ``frozen_stages``, ``conv_cfg`` for the plain convs,
            ``norm_eval``, ``init_cfg``, ...).

    Shapes:
        (N, 3, H, W) -> the outputs of ``out_indices``.

    Example:
        >>> import torch
        >>> model = DCDMobileNetV2(widen_factor=0.5).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 1280, 2, 2)]
    """

    def __init__(self,
                 widen_factor: float = 1.,
                 dcd_cfg: dict = dict(type='DCDConv2d', squeeze_ratio=8),
                 expand_pool_size: int = 2,
                 **kwargs) -> None:
        check_layer_cfg(dcd_cfg, 'dcd_cfg')
        set_here = {'pool_size', 'latent_dim'} & set(dcd_cfg)
        if set_here:
            raise ValueError(
                f'DCDMobileNetV2 sets {sorted(set_here)} per conv; remove '
                'them from dcd_cfg (expand_pool_size sets the expansions\' '
                'pooling).')
        # read by make_layer, within __init__
        self.dcd_cfg, self.expand_pool_size = dcd_cfg, expand_pool_size
        super().__init__(widen_factor, **kwargs)

    def train(self, mode: bool = True) -> 'DCDMobileNetV2':
        """mmpretrain's ``MobileNetV2.train`` (freezing, norm_eval), returning
        self as ``nn.Module.train`` does."""
        super().train(mode)
        return self

    def _dcd_like(self, conv, pool_size: int, reduction: int):
        features = conv.in_channels * pool_size**2
        latent = dcd_mobilenet_v2_latent_dim(features, conv.out_channels,
                                             reduction)
        return build_conv_like(
            conv, self.dcd_cfg, pool_size=pool_size, latent_dim=latent)

    def make_layer(self, out_channels, num_blocks, stride, expand_ratio):
        """mmpretrain's layer; where the blocks expand, their 1x1 expansion
        and projection are rebuilt as DCDs."""
        layer = super().make_layer(out_channels, num_blocks, stride,
                                   expand_ratio)
        if expand_ratio != 1:
            for block in layer:
                expand, project = block.conv[0], block.conv[-1]
                expand.conv = self._dcd_like(expand.conv,
                                             self.expand_pool_size, 8)
                project.conv = self._dcd_like(project.conv, 1, 2)
        return layer
