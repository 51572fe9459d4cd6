"""FCN mask head whose convs are involutions (Li et al., CVPR 2021)."""
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmengine.model import ModuleList

from ...layers.involution import (HEAD_INVOLUTION_CFG, InvolutionModule,
                                 merge_involution_cfg)
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
    The involutions start as the identity plus their input-dependent term
    (:meth:`init_involutions`), so the RoI features reach the logits
    linearly from the first step, as through FCNMaskHead's convs.

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
                 involution_cfg: dict = HEAD_INVOLUTION_CFG,
                 **kwargs) -> None:
        involution_cfg = merge_involution_cfg(involution_cfg, kwargs,
                                              'InvolutionFCNMaskHead')
        if kwargs.get('conv_cfg') is not None:
            raise ValueError(
                'InvolutionFCNMaskHead does not use conv_cfg='
                f'{kwargs["conv_cfg"]!r} (its convs are involutions); '
                'configure them with involution_cfg instead.')
        if kwargs.get('conv_kernel_size', 3) != 3 and involution_cfg.get(
                'window_size') is not None:
            raise ValueError(
                'InvolutionFCNMaskHead: conv_kernel_size='
                f'{kwargs["conv_kernel_size"]} would be unused beside '
                f'involution_cfg window_size={involution_cfg["window_size"]};'
                ' set one of them (window_size=None takes conv_kernel_size).')
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
                self.in_channels,
                self.conv_kernel_size,
                padding=(self.conv_kernel_size - 1) // 2,
                out_norm_cfg=self.norm_cfg,
                out_act_cfg=dict(type='ReLU'),
                **involution_cfg) for _ in range(self.num_convs))
        self.init_involutions()

    def init_involutions(self) -> None:
        """Start every involution as the identity plus its input-dependent
        term (:meth:`Involution.init_span_conv` with ``identity=True``): a
        stack of zero-mean involutions, with ReLUs and no norm between,
        predicted a constant mask for hundreds of iterations."""
        for involution in self.convs:
            involution.init_span_conv(identity=True)

    def init_weights(self) -> None:
        """FCNMaskHead's initialisation (it takes no ``init_cfg``), then
        :meth:`init_involutions`."""
        super().init_weights()
        self.init_involutions()
