"""RPN head whose 3x3 conv is an involution (Li et al., CVPR 2021)."""
import torch.nn as nn
from mmdet.models.dense_heads import RPNHead
from mmengine.model import Sequential

from ...layers.involution import (HEAD_INVOLUTION_CFG, Involution,
                                  InvolutionModule, involution_kwargs)
from ...registry import MODELS


@MODELS.register_module()
class InvolutionRPNHead(RPNHead):
    """RPN head whose 3x3 ``rpn_conv`` is a K x K involution.

    With ``num_convs=1`` (the default) ``rpn_conv`` is an
    :class:`Involution`, followed by RPNHead's ReLU, as in the paper; its
    state dict reads ``rpn_conv.conv1.*``, ``rpn_conv.conv2.*``. With
    ``num_convs > 1`` it is a sequence of involution + ReLU blocks, like
    RPNHead's ConvModules (``rpn_conv.{i}.conv1.*``). ``rpn_cls``,
    ``rpn_reg``, anchors, losses and post-processing are RPNHead's.

    Args:
        in_channels (int): channels of the input features.
        involution_cfg (dict): :class:`Involution` arguments, as in
            :class:`InvolutionFPN` (default ``HEAD_INVOLUTION_CFG``: 7x7, 16
            channels a group, reduction 4, BN).
        **kwargs: the other :class:`mmdet.models.dense_heads.RPNHead`
            arguments. ``feat_channels`` (default 256) must equal
            ``in_channels``: an involution keeps its channels.

    Shapes:
        per level: (N, in_channels, H, W) -> cls_score (N, A, H, W),
        bbox_pred (N, A * 4, H, W), A anchors per location.

    Example:
        >>> import torch
        >>> head = InvolutionRPNHead(32, feat_channels=32).eval()
        >>> cls_score, bbox_pred = head.forward_single(
        ...     torch.rand(1, 32, 25, 19))
        >>> cls_score.shape, bbox_pred.shape
        (torch.Size([1, 9, 25, 19]), torch.Size([1, 36, 25, 19]))
    """

    def __init__(self,
                 in_channels: int,
                 *,
                 involution_cfg: dict = HEAD_INVOLUTION_CFG,
                 **kwargs) -> None:
        # read by _init_layers, which RPNHead.__init__ calls
        self.involution_cfg = involution_kwargs(involution_cfg,
                                                'InvolutionRPNHead')
        super().__init__(in_channels, **kwargs)

    def _init_layers(self) -> None:
        """RPNHead's layers, with ``rpn_conv`` built as involution(s)."""
        if self.feat_channels != self.in_channels:
            raise ValueError(
                'InvolutionRPNHead needs feat_channels == in_channels (an '
                f'involution keeps its channels), got in_channels='
                f'{self.in_channels}, feat_channels={self.feat_channels}.')
        if self.num_convs > 1:
            # mmengine's Sequential: init_weights reaches each involution's
            self.rpn_conv = Sequential(*[
                InvolutionModule(
                    self.in_channels,
                    self.in_channels,
                    3,
                    padding=1,
                    out_act_cfg=dict(type='ReLU'),
                    **self.involution_cfg) for _ in range(self.num_convs)
            ])
        else:
            self.rpn_conv = Involution(
                self.in_channels,
                self.in_channels,
                3,
                padding=1,
                **self.involution_cfg)
        self.rpn_cls = nn.Conv2d(self.feat_channels,
                                 self.num_base_priors * self.cls_out_channels,
                                 1)
        self.rpn_reg = nn.Conv2d(
            self.feat_channels,
            self.num_base_priors * self.bbox_coder.encode_size, 1)
