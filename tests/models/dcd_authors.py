"""The DCD authors' ImageNet models, re-implemented for the tests.

Written here from the structure of github liyunsheng13/dcd
(``models/imagenet/resnet_dcd.py``: ``resnet18_dcd``, ``resnet50_dcd``;
``models/imagenet/mobilenetv2_dcd.py``: ``MobileNetV2_dcd``): the same
modules under the same attribute names, so the same state-dict keys and
shapes, and the same forward, independently of the package's layers. The
tests build the authors' checkpoints from these models and check the
converted classifiers against them.

One deliberate difference: the ResNets' final ``AvgPool2d(7)`` is a global
average pool here, which is the same at 224 px and also runs on the tests'
small inputs.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class Hsigmoid(nn.Module):
    """``relu6(x + 3) / 3``."""

    def forward(self, x):
        return F.relu6(x + 3.) / 3.


class SEModule_small(nn.Module):  # noqa: N801 (their name, their keys)
    """``x * hsig(Linear(x))``; key ``fc.0.weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels, bias=False), Hsigmoid())

    def forward(self, x):
        return x * self.fc(x)


def _add_generators(module: nn.Module, features: int, squeeze: int, dim: int,
                    out: int) -> None:
    """``fc`` (squeeze + SE), ``fc_phi`` and ``fc_scale`` as theirs."""
    module.fc = nn.Sequential(
        nn.Linear(features, squeeze, bias=False), SEModule_small(squeeze))
    module.fc_phi = nn.Linear(squeeze, dim * dim, bias=False)
    module.fc_scale = nn.Linear(squeeze, out, bias=False)
    module.hs = Hsigmoid()


class AuthorsDynamicConv(nn.Module):
    """Their ``conv_basic_dy`` / ``conv_dy`` / ``DYModule``.

    ``out = hsig(scale(y)) * conv(x) + P(BN1d(Phi(y) z) + z)``, ``z =
    BN2d(Q x)``, ``y = SE(Linear(pool(x)))``. ``q_p`` names Q and P (``q``,
    ``p`` in the ResNets; ``conv_q``, ``conv_p`` in MobileNetV2).
    """

    def __init__(self,
                 inp: int,
                 oup: int,
                 kernel: int,
                 stride: int,
                 pool: int,
                 dim: int,
                 squeeze: int,
                 q_p: Tuple[str, str] = ('q', 'p')) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            inp, oup, kernel, stride, kernel // 2, bias=False)
        self.dim, self.q_p = dim, q_p
        setattr(self, q_p[0], nn.Conv2d(inp, dim, 1, stride, bias=False))
        setattr(self, q_p[1], nn.Conv2d(dim, oup, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(dim)
        self.bn2 = nn.BatchNorm1d(dim)
        self.avg_pool = nn.AdaptiveAvgPool2d(pool)
        _add_generators(self, inp * pool * pool, squeeze, dim, oup)

    def forward(self, x):
        b = x.shape[0]
        r = self.conv(x)
        y = self.fc(self.avg_pool(x).view(b, -1))
        phi = self.fc_phi(y).view(b, self.dim, self.dim)
        scale = self.hs(self.fc_scale(y)).view(b, -1, 1, 1)
        q, p = (getattr(self, name) for name in self.q_p)
        z = self.bn1(q(x))
        h, w = z.shape[2:]
        z = z.view(b, self.dim, -1)
        z = self.bn2(torch.matmul(phi, z)) + z
        return p(z.view(b, -1, h, w)) + scale * r


def resnet18_conv(inp: int, oup: int, stride: int) -> AuthorsDynamicConv:
    """Their ``conv_basic_dy``: 3x3, 2x2 pooling, ``L = int(sqrt(4 C))``,
    squeeze ``max(4 C, L^2) // 16`` (at least 4)."""
    dim = int(math.sqrt(inp * 4))
    return AuthorsDynamicConv(inp, oup, 3, stride, 2, dim,
                              max(max(inp * 4, dim**2) // 16, 4))


def resnet50_conv(inp: int, oup: int, kernel: int,
                  stride: int) -> AuthorsDynamicConv:
    """Their ``conv_dy``: global pooling, ``L = int(sqrt(C))``, squeeze
    ``max(C, L^2) // 16``."""
    dim = int(math.sqrt(inp))
    return AuthorsDynamicConv(inp, oup, kernel, stride, 1, dim,
                              max(inp, dim**2) // 16)


def mobilenet_v2_conv(inp: int, oup: int,
                      fc_squeeze: int) -> AuthorsDynamicConv:
    """Their ``DYModule``: a 1x1 conv; expanding (inp < oup) pools 2x2 and
    starts the reduction at 8, otherwise global pooling from 2."""
    mul, reduction = (4, 8) if inp < oup else (1, 2)
    dim = min(inp * mul // reduction, oup // reduction)
    while dim**2 > inp * mul * 2:
        reduction *= 2
        dim = min(inp * mul // reduction, oup // reduction)
    dim = max(dim, 4)
    squeeze = max(max(inp * mul, dim**2) // fc_squeeze, 4)
    return AuthorsDynamicConv(inp, oup, 1, 1, 2 if mul == 4 else 1, dim,
                              squeeze, ('conv_q', 'conv_p'))


class DYCls(nn.Module):
    """Their dynamic classifier: ``hsig(scale) * cls(x) + cls_p(BN(Phi
    z) + z)``, ``z = BN(cls_q x)``, 32 latent and squeeze channels."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.dim = 32
        self.cls = nn.Linear(inp, oup)
        self.cls_q = nn.Linear(inp, self.dim, bias=False)
        self.cls_p = nn.Linear(self.dim, oup, bias=False)
        _add_generators(self, inp, 32, self.dim, oup)
        self.bn1 = nn.BatchNorm1d(self.dim)
        self.bn2 = nn.BatchNorm1d(self.dim)

    def forward(self, x):
        b = x.shape[0]
        y = self.fc(x)
        phi = self.fc_phi(y).view(b, self.dim, self.dim)
        r = self.hs(self.fc_scale(y)) * self.cls(x)
        z = self.bn1(self.cls_q(x))
        z = self.bn2(
            torch.matmul(phi, z.view(b, self.dim, 1)).view(b, self.dim)) + z
        return self.cls_p(z) + r


def _classifier(features: int, num_classes: int,
                dropout: Optional[float]) -> nn.Sequential:
    """``classifier``: Dropout (``classifier.0``) when given, then DYCls."""
    layers = [] if dropout is None else [nn.Dropout(dropout)]
    return nn.Sequential(*layers, DYCls(features, num_classes))


class BasicBlock_dy(nn.Module):  # noqa: N801

    expansion = 1

    def __init__(self, inp, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = resnet18_conv(inp, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = resnet18_conv(planes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck_dy(nn.Module):  # noqa: N801

    expansion = 4

    def __init__(self, inp, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = resnet50_conv(inp, planes, 1, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = resnet50_conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = resnet50_conv(planes, planes * 4, 1, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet_dcd(nn.Module):  # noqa: N801
    """Their ResNet: plain 7x7 stem and shortcuts, dynamic blocks and
    classifier."""

    def __init__(self, block, layers, num_classes=1000, dropout=None):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for stage, blocks in enumerate(layers):
            setattr(
                self, f'layer{stage + 1}',
                self._make_layer(block, 64 * 2**stage, blocks,
                                 1 if stage == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # theirs: AvgPool2d(7)
        self.classifier = _classifier(512 * block.expansion, num_classes,
                                      dropout)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes,
                    planes * block.expansion,
                    1,
                    stride,
                    bias=False), nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f'layer{stage}')(x)
        return self.classifier(self.avgpool(x).flatten(1))


def resnet18_dcd(**kwargs) -> ResNet_dcd:
    return ResNet_dcd(BasicBlock_dy, [2, 2, 2, 2], **kwargs)


def resnet50_dcd(**kwargs) -> ResNet_dcd:
    return ResNet_dcd(Bottleneck_dy, [3, 4, 6, 3], **kwargs)


def make_divisible(value: float, divisor: int = 8) -> int:
    """The TF MobileNet rounding: to a multiple of ``divisor``, not below
    90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(inp: int,
             oup: int,
             kernel: int,
             stride: int,
             groups: int = 1,
             relu: bool = True) -> list:
    layers = [
        nn.Conv2d(
            inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup)
    ]
    return layers + [nn.ReLU6()] if relu else layers


class InvertedResidual(nn.Module):
    """Theirs: t = 1 is plain (depthwise, projection); otherwise the 1x1
    expansion and projection are ``DYModule``s (``conv.0``, ``conv.6``)."""

    def __init__(self, inp, oup, stride, expand_ratio, fc_squeeze):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.identity = stride == 1 and inp == oup
        depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        if expand_ratio == 1:
            layers = depthwise + _conv_bn(hidden, oup, 1, 1, relu=False)
        else:
            layers = [
                mobilenet_v2_conv(inp, hidden, fc_squeeze),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(), *depthwise,
                mobilenet_v2_conv(hidden, oup, fc_squeeze),
                nn.BatchNorm2d(oup)
            ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.identity else self.conv(x)


#: t, c, n, s of MobileNetV2's blocks
MOBILENET_V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                       (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]


class MobileNetV2_dcd(nn.Module):  # noqa: N801
    """Their MobileNetV2 (``features``, ``conv``, ``classifier``)."""

    def __init__(self,
                 num_classes=1000,
                 width_mult=1.,
                 dropout=None,
                 fc_squeeze=8):
        super().__init__()
        channels = make_divisible(32 * width_mult)
        layers = [nn.Sequential(*_conv_bn(3, channels, 3, 2))]
        for t, c, n, s in MOBILENET_V2_BLOCKS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(
                    InvertedResidual(channels, out, s if i == 0 else 1, t,
                                     fc_squeeze))
                channels = out
        self.features = nn.Sequential(*layers)
        last = make_divisible(1280 * width_mult) if width_mult > 1 else 1280
        self.conv = nn.Sequential(*_conv_bn(channels, last, 1, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _classifier(last, num_classes, dropout)

    def forward(self, x):
        x = self.avgpool(self.conv(self.features(x)))
        return self.classifier(x.flatten(1))


def randomize_(model: nn.Module, seed: int, images: torch.Tensor) -> nn.Module:
    """Every parameter drawn at random (seeded), kernels scaled by
    1/sqrt(fan-in) (Phi's generators ``fc_phi`` by 1/L more); BatchNorm
    statistics then taken from a train-mode pass over ``images`` (N, 3, H,
    W), the inputs to evaluate: the dynamic layers grow their input's
    magnitude quadratically, so statistics that do not fit the input blow
    it up. Returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    norms = [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        for name, module in model.named_modules():
            for tensor in module.parameters(recurse=False):
                scale = tensor[0].numel()**-0.5 if tensor.dim() > 1 else .2
                if name.endswith('fc_phi'):  # L^2 outputs, Phi L x L
                    scale /= math.sqrt(tensor.shape[0])
                shift = 1. if module in norms and tensor is module.weight \
                    else 0.
                tensor.copy_(
                    torch.randn(tensor.shape, generator=generator) * scale +
                    shift)
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # the pass's own statistics
        model.train()
        model(images)
        for norm in norms:
            norm.momentum = 0.1
    return model.eval()
