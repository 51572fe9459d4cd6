"""ResNet with DCD in the residual blocks (the DCD authors' ResNets)."""
from mmpretrain.models.backbones import ResNet

from ...layers.conv_attributes import build_conv_like, check_layer_cfg
from ...registry import MODELS

#: the convs of mmpretrain's BasicBlock (conv1, conv2) and Bottleneck
BLOCK_CONVS = ('conv1', 'conv2', 'conv3')


@MODELS.register_module()
class DCDResNet(ResNet):
    """mmpretrain's ``ResNet`` whose residual blocks' convs are DCDs.

    As the DCD authors built their ImageNet ResNets (Li et al. 2021,
    github liyunsheng13/dcd): every conv of every BasicBlock or Bottleneck
    is a :class:`~mmplug_involution.layers.DCDConv2d` (``dcd_cfg``), while
    the 7x7 stem and the 1x1 shortcut convs stay what ``conv_cfg`` makes
    (plain convs). Their ResNet-18 pools to 2x2 before the squeeze
    (``dcd_cfg=dict(type='DCDConv2d', pool_size=2)``), their ResNet-50 pools
    globally (the default). A block conv ``layerS.B.convI`` keeps its name;
    its static kernel is ``layerS.B.convI.static.weight``, so an ImageNet
    ResNet checkpoint loads into the static kernels.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        dcd_cfg (dict): the layer config of the blocks' convs. Default
            ``dict(type='DCDConv2d')``.
        **kwargs: the other ``ResNet`` arguments (``conv_cfg`` for the stem
            and shortcuts, ``out_indices``, ``frozen_stages``,
            ``norm_eval``, ``zero_init_residual``, ``init_cfg``, ...).

    Shapes:
        (N, 3, H, W) -> the ResNet's stage outputs.

    Example:
        >>> import torch
        >>> model = DCDResNet(18, base_channels=16, out_indices=(0, 3))
        >>> [tuple(o.shape) for o in model.eval()(torch.rand(1, 3, 64, 80))]
        [(1, 16, 16, 20), (1, 128, 2, 3)]
    """

    def __init__(self,
                 depth: int,
                 dcd_cfg: dict = dict(type='DCDConv2d'),
                 **kwargs) -> None:
        check_layer_cfg(dcd_cfg, 'dcd_cfg')
        self.dcd_cfg = dcd_cfg  # read by make_res_layer, within __init__
        super().__init__(depth, **kwargs)

    def train(self, mode: bool = True) -> 'DCDResNet':
        """mmpretrain's ``ResNet.train`` (freezing, norm_eval), returning
        self as ``nn.Module.train`` does."""
        super().train(mode)
        return self

    def make_res_layer(self, **kwargs):
        """mmpretrain's ResLayer with every block conv rebuilt as
        ``dcd_cfg``."""
        layer = super().make_res_layer(**kwargs)
        for block in layer:
            for name in BLOCK_CONVS:
                conv = getattr(block, name, None)
                if conv is not None:
                    setattr(block, name, build_conv_like(conv, self.dcd_cfg))
        return layer
