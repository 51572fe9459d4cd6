"""FCN mask head whose convs are involutions (Li et al., CVPR 2021)."""
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.utils import OptConfigType
from mmengine.model import ModuleList

from ...layers import InvolutionModule
from ...registry import MODELS


@MODELS.register_module()
class InvolutionFCNMaskHead(FCNMaskHead):
    """FCN mask head whose ``convs`` are K x K involutions.

    Each of the ``num_convs`` 3x3 ConvModules (conv, ``norm_cfg``, ReLU)
    becomes an involution followed by the same norm and ReLU; its state
    dict reads ``convs.{i}.conv1.*``, ``convs.{i}.conv2.*`` (plus
    ``convs.{i}.norm.*`` with a ``norm_cfg``). ``upsample``,
    ``conv_logits``, targets, loss and mask pasting are FCNMaskHead's.
    ``conv_kernel_size`` and ``conv_cfg`` describe the replaced convs: a
    value other than FCNMaskHead's default (3, None) is an error, since it
    would be silently unused; the window is ``involution_kernel_size``.

    Args:
        involution_kernel_size (int): K, odd. Default 7.
        involution_group_channels (int): channels sharing one kernel.
            Default 16.
        involution_reduction_ratio (int): channel reduction in the kernel
            generator. Default 4.
        involution_norm_cfg (dict, optional): norm inside the kernel
            generator. Default ``dict(type='BN')``.
        **kwargs: the :class:`mmdet.models.roi_heads.FCNMaskHead` arguments.
            With ``num_convs > 0``, ``conv_out_channels`` must equal
            ``in_channels`` (both 256 by default): an involution keeps its
            channels.

    Shapes:
        (R, in_channels, S, S) RoI features -> (R, num_classes, 2S, 2S)
        mask logits (1 channel if ``class_agnostic``), as FCNMaskHead.

    Example:
        >>> import torch
        >>> head = InvolutionFCNMaskHead(
        ...     num_convs=2, in_channels=32, conv_out_channels=32,
        ...     num_classes=3).eval()
        >>> head(torch.rand(4, 32, 14, 14)).shape
        torch.Size([4, 3, 28, 28])
    """

    def __init__(self,
                 *,
                 involution_kernel_size: int = 7,
                 involution_group_channels: int = 16,
                 involution_reduction_ratio: int = 4,
                 involution_norm_cfg: OptConfigType = dict(type='BN'),
                 **kwargs) -> None:
        for name, default in (('conv_kernel_size', 3), ('conv_cfg', None)):
            if kwargs.get(name, default) != default:
                raise ValueError(
                    f'InvolutionFCNMaskHead does not use {name}='
                    f'{kwargs[name]!r} (its convs are involutions); set '
                    'involution_kernel_size for the window instead.')
        super().__init__(**kwargs)
        if self.num_convs > 0 and self.conv_out_channels != self.in_channels:
            raise ValueError(
                'InvolutionFCNMaskHead needs conv_out_channels == in_channels '
                '(an involution keeps its channels), got in_channels='
                f'{self.in_channels}, conv_out_channels='
                f'{self.conv_out_channels}.')
        self.convs = ModuleList(
            InvolutionModule(
                self.in_channels,
                out_norm_cfg=self.norm_cfg,
                out_act_cfg=dict(type='ReLU'),
                kernel_size=involution_kernel_size,
                group_channels=involution_group_channels,
                reduction_ratio=involution_reduction_ratio,
                norm_cfg=involution_norm_cfg) for _ in range(self.num_convs))
