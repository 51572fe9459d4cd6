"""The ``nn.Conv2d`` attributes that let a layer stand in for a conv."""
from mmcv.cnn import build_conv_layer

from ..ops.per_sample_conv import IntPair


class ConvAttributesMixin:
    """Gives a layer the attributes mmcv's ``ConvModule`` reads of its conv.

    ``ConvModule(..., conv_cfg=dict(type=...))`` copies ``in_channels``,
    ``out_channels``, ``kernel_size``, ``stride``, ``padding``,
    ``dilation``, ``transposed``, ``output_padding`` and ``groups`` from the
    layer it builds; a layer that takes ``nn.Conv2d``'s arguments writes
    them with :meth:`set_conv_attributes`, as ints or pairs (its own
    convention), and is never transposed.
    """

    def set_conv_attributes(self, in_channels: int, out_channels: int,
                            kernel_size: IntPair, stride: IntPair,
                            padding: IntPair, dilation: IntPair,
                            groups: int) -> None:
        """Write the conv attributes (``transposed`` False, no
        ``output_padding``)."""
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.dilation = padding, dilation
        self.groups = groups
        self.transposed, self.output_padding = False, (0, 0)


def check_layer_cfg(cfg, argument: str) -> None:
    """Refuse ``cfg`` unless it is a layer config dict with a ``type``;
    ``argument`` names it in the message (``'dcd_cfg'``)."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'{argument} must be a layer config dict with a '
                         f'type, e.g. dict(type="DCDConv2d"); got {cfg!r}.')


def build_conv_like(conv, cfg: dict, **kwargs):
    """A conv layer of type ``cfg`` (with ``kwargs`` added to it) taking
    ``conv``'s channels, kernel size, stride, padding, dilation, groups and
    bias: what a backbone builds in place of a conv it has made."""
    return build_conv_layer(
        dict(cfg, **kwargs),
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None)
