"""Every layer keeps a channels_last input's layout and computes the same as
with an NCHW input (forward and gradients), so channels_last networks stay in
channels_last end to end."""
import pytest
import torch

from mmplug_involution.layers import (CondConv2d, DCDConv2d, DynamicConv2d,
                                      Involution, InvolutionModule, XVolution,
                                      switch_xvolution_to_deploy)


def _xvolution_deploy():
    layer = XVolution(32, 32, 3, padding=1, attention='pssa')
    layer.eval()
    switch_xvolution_to_deploy(layer)
    return layer


LAYERS = {
    'involution':
    lambda: Involution(32, kernel_size=7, stride=2),
    'involution-module':
    lambda: InvolutionModule(
        32, out_norm_cfg=dict(type='BN'), out_act_cfg=dict(type='ReLU')),
    'xvolution-pssa':
    lambda: XVolution(32, 32, 3, padding=1),
    'xvolution-involution':
    lambda: XVolution(32, 32, 3, stride=2, padding=1, attention='involution'),
    'xvolution-sa':
    lambda: XVolution(32, 32, 3, padding=1, attention='sa'),
    'xvolution-deploy':
    _xvolution_deploy,
    'condconv':
    lambda: CondConv2d(32, 48, 3, padding=1),
    'dynamicconv':
    lambda: DynamicConv2d(32, 48, 3, stride=2, padding=1),
    'dcd':
    lambda: DCDConv2d(32, 48, 3, padding=1),
    'dcd-depthwise':
    lambda: DCDConv2d(32, 32, 3, padding=1, groups=32),
}


@pytest.mark.parametrize('name', LAYERS)
def test_channels_last_in_channels_last_out(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    x = torch.randn(2, 32, 13, 11, dtype=torch.float64)
    plain_x = x.clone().requires_grad_(True)
    last_x = x.contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    plain = layer(plain_x)
    last = layer(last_x)
    assert plain.is_contiguous()
    assert last.is_contiguous(memory_format=torch.channels_last), (
        f'{name} returned strides {last.stride()} for a channels_last input')
    torch.testing.assert_close(last, plain)
    if not layer.training:
        return
    grad = torch.randn_like(plain)
    plain.backward(grad)
    last.backward(grad.contiguous(memory_format=torch.channels_last))
    assert last_x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(last_x.grad, plain_x.grad)
