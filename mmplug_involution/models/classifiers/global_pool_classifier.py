"""An ImageNet-style classifier: backbone, global average pooling, linear."""
from typing import Optional

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from ...registry import MODELS


class LinearHead(nn.Module):
    """``fc`` on pooled features, named as in mmpretrain's LinearClsHead."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


@MODELS.register_module()
class GlobalPoolClassifier(BaseModule):
    """Backbone + global average pooling + linear head.

    The state dict reads ``backbone.*``, ``head.fc.weight``, ``head.fc.bias``
    as in mmcls/mmpretrain ``ImageClassifier`` checkpoints, so those load key
    for key. Used to reproduce the papers' ImageNet parameter and FLOP counts.

    Args:
        backbone (dict): Backbone config; its last output is classified.
        num_classes (int): Default 1000.
        in_channels (int, optional): Channels of the last backbone output;
            read from ``backbone.feat_dim`` when omitted.
        init_cfg (dict, optional): mmengine init config.

    Shapes:
        (N, 3, H, W) -> (N, num_classes) logits.
    """

    def __init__(self,
                 backbone: dict,
                 num_classes: int = 1000,
                 in_channels: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        if in_channels is None:
            in_channels = getattr(self.backbone, 'feat_dim', None)
            if in_channels is None:
                raise ValueError(
                    f'{type(self.backbone).__name__} has no feat_dim; pass '
                    'in_channels (channels of its last output).')
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = LinearHead(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, num_classes)."""
        feats = self.backbone(x)
        last = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.head(self.pool(last).flatten(1))
