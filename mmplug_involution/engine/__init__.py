"""Training components for the mmengine runner."""
from .dynamic_conv_temperature_hook import DynamicConvTemperatureHook
from .fuse_conv_bn_hook import FuseConvBNHook
from .mixup_alpha_ramp_hook import MixupAlphaRampHook

__all__ = [
    'DynamicConvTemperatureHook', 'FuseConvBNHook', 'MixupAlphaRampHook'
]
