"""FCN mask head whose convs are involutions (Li et al., CVPR 2021)."""
from mmdet.models.roi_heads.mask_heads import FCNMaskHead

from ...layers.involution import (HEAD_INVOLUTION_CFG, InvolutionModule,
                                  involution_kwargs)
from ...registry import MODELS


@MODELS.register_module()
class InvolutionFCNMaskHead(FCNMaskHead):
    """FCN mask head whose ``convs`` are K x K involutions.

    Each of the ``num_convs`` convs is an :class:`InvolutionModule`
    (involution, ``norm_cfg``, ReLU: FCNMaskHead's ConvModule with an
    involution as its conv); its state dict reads ``convs.{i}.conv1.*``,
    ``convs.{i}.conv2.*`` (plus ``convs.{i}.norm.*`` with a ``norm_cfg``).
    ``upsample``, ``conv_logits``, targets, loss and mask pasting are
    FCNMaskHead's. The involutions start as the identity plus their
    input-dependent term (:meth:`init_involutions`), so the RoI features
    reach the logits linearly from the first step, as through FCNMaskHead's
    convs.

    Args:
        num_convs (int): number of involutions. Default 4.
        involution_cfg (dict): :class:`Involution` arguments, as in
            :class:`InvolutionFPN` (default ``HEAD_INVOLUTION_CFG``: 7x7, 16
            channels a group, reduction 4, BN). ``window_size=None`` takes
            K from ``conv_kernel_size``.
        **kwargs: the other :class:`mmdet.models.roi_heads.FCNMaskHead`
            arguments. With ``num_convs > 0``, ``conv_out_channels`` must
            equal ``in_channels`` (both 256 by default): an involution keeps
            its channels. ``conv_cfg`` and a ``conv_kernel_size`` other than
            3 beside a ``window_size`` would be unused and are refused.

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
                 num_convs: int = 4,
                 involution_cfg: dict = HEAD_INVOLUTION_CFG,
                 **kwargs) -> None:
        involution_cfg = involution_kwargs(involution_cfg,
                                           'InvolutionFCNMaskHead')
        if kwargs.get('conv_cfg') is not None:
            raise ValueError(
                'InvolutionFCNMaskHead does not use conv_cfg='
                f'{kwargs["conv_cfg"]!r} (its convs are involutions); '
                'configure them with involution_cfg instead.')
        if kwargs.get(
                'conv_kernel_size',
                3) != 3 and involution_cfg.get('window_size') is not None:
            raise ValueError(
                'InvolutionFCNMaskHead: conv_kernel_size='
                f'{kwargs["conv_kernel_size"]} would be unused beside '
                f'involution_cfg window_size={involution_cfg["window_size"]};'
                ' set one of them (window_size=None takes conv_kernel_size).')
        # FCNMaskHead builds no convs; the involutions are built below
        super().__init__(num_convs=0, **kwargs)
        self.num_convs = num_convs
        if num_convs > 0 and self.conv_out_channels != self.in_channels:
            raise ValueError(
                'InvolutionFCNMaskHead needs conv_out_channels == in_channels '
                '(an involution keeps its channels), got in_channels='
                f'{self.in_channels}, conv_out_channels='
                f'{self.conv_out_channels}.')
        self.convs.extend(
            InvolutionModule(
                self.in_channels,
                self.in_channels,
                self.conv_kernel_size,
                padding=(self.conv_kernel_size - 1) // 2,
                out_norm_cfg=self.norm_cfg,
                out_act_cfg=dict(type='ReLU'),
                **involution_cfg) for _ in range(num_convs))
        self.init_involutions()

    def init_involutions(self) -> None:
        """Start every involution as the identity plus its input-dependent
        term (:meth:`Involution.init_span_conv` with ``identity=True``), so
        that a stack of them, with ReLUs and no norm between, passes its
        input on from the first step."""
        for involution in self.convs:
            involution.init_span_conv(identity=True)

    def init_weights(self) -> None:
        """FCNMaskHead's initialisation (it takes no ``init_cfg``), then
        :meth:`init_involutions`."""
        super().init_weights()
        self.init_involutions()
