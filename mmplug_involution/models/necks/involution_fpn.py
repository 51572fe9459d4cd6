"""FPN whose 3x3 output convs are involutions (Li et al., CVPR 2021)."""
from mmdet.models.necks import FPN

from ...layers.involution import (HEAD_INVOLUTION_CFG, InvolutionModule,
                                  involution_kwargs, loads_checkpoint)
from ...registry import MODELS


@MODELS.register_module()
class InvolutionFPN(FPN):
    """FPN whose 3x3 output convs are K x K involutions.

    As in the paper's detectors, the output conv of every level built from
    a backbone input (``fpn_convs[:num_levels]``, out_channels ->
    out_channels) becomes an :class:`Involution`; the 1x1 lateral convs and
    the stride-2 extra convs (``add_extra_convs``, e.g. RetinaNet's P6/P7)
    stay convs. FPN's ``norm_cfg`` and ``act_cfg`` are applied after each
    involution as they were after each conv (the defaults, None, give the
    paper's bare involution); ``conv_cfg`` only applies to the convs that
    remain. The involution levels keep Involution's state-dict layout
    (``fpn_convs.0.conv1.conv.weight``, ``fpn_convs.0.conv2.conv.weight``).

    Args:
        *args, **kwargs: the :class:`mmdet.models.necks.FPN` arguments
            (``in_channels``, ``out_channels``, ``num_outs``,
            ``start_level``, ``add_extra_convs``, ``norm_cfg``,
            ``act_cfg``, ...); ``out_channels`` must be divisible by the
            involution's ``group_channels`` and ``reduction_ratio``.
        involution_cfg (dict): :class:`Involution` arguments of the output
            involutions (``window_size``, ``group_channels``,
            ``reduction_ratio``, ``norm_cfg`` of the kernel generator,
            ``act_cfg``). Default ``HEAD_INVOLUTION_CFG``: 7x7, 16 channels
            a group, reduction 4, BN.

    Shapes:
        inputs[i]: (N, in_channels[i], H_i, W_i) -> outputs: ``num_outs``
        tensors (N, out_channels, H, W), the same as FPN's.

    Example:
        >>> import torch
        >>> neck = InvolutionFPN([16, 32, 64], 32, num_outs=4).eval()
        >>> inputs = [torch.rand(1, c, s, s)
        ...           for c, s in zip([16, 32, 64], [40, 20, 10])]
        >>> [tuple(out.shape) for out in neck(inputs)]
        [(1, 32, 40, 40), (1, 32, 20, 20), (1, 32, 10, 10), (1, 32, 5, 5)]
    """

    def __init__(self,
                 *args,
                 involution_cfg: dict = HEAD_INVOLUTION_CFG,
                 **kwargs) -> None:
        involution_cfg = involution_kwargs(involution_cfg, 'InvolutionFPN')
        super().__init__(*args, **kwargs)
        # FPN builds its convs inline, with no hook to build others: each
        # level output conv gives way to an involution with its norm and act
        for i, conv in enumerate(self.fpn_convs[:len(self.lateral_convs)]):
            self.fpn_convs[i] = InvolutionModule(
                self.out_channels,
                self.out_channels,
                3,
                padding=1,
                out_norm_cfg=conv.norm_cfg,
                out_act_cfg=conv.act_cfg,
                **involution_cfg)

    def init_weights(self) -> None:
        """FPN's initialisation (``init_cfg``: Xavier on every conv by
        default), then each involution's span conv drawn as
        :meth:`Involution.init_span_conv` says, unless ``init_cfg`` loads a
        checkpoint or the involution has its own ``init_cfg``. (FPN keeps its
        convs in a torch ModuleList, which mmengine does not descend into.)
        """
        super().init_weights()
        if loads_checkpoint(self.init_cfg):
            return
        for involution in self.fpn_convs[:len(self.lateral_convs)]:
            if involution.init_cfg is None:
                involution.init_span_conv()
