"""Training components for the mmengine runner."""
from .dynamic_conv_temperature_hook import DynamicConvTemperatureHook

__all__ = ['DynamicConvTemperatureHook']
