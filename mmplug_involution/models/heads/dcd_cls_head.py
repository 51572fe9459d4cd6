"""The DCD authors' dynamic classifier as an mmpretrain head."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from torch import Tensor

from ...layers.dynamic_conv import dcd_dynamic_branch
from ...registry import MODELS


@MODELS.register_module()
class DCDClsHead(ClsHead):
    """A linear classifier decomposed as DCD: ``W(x) = Lambda(x) W0 + P
    Phi(x) Q^T``.

    The classifier of the DCD authors' ImageNet models (``DYCls`` in
    github liyunsheng13/dcd), on the pooled feature x (N, C):

        logits = Lambda(x) * (W0 x + b) + P (BN(Phi(x) z) + z),
        z = BN(Q x)

    Q: C -> L, P: L -> num_classes, Phi(x) L x L and Lambda(x) (N,
    num_classes) in [0, 2] come from a C -> S squeeze with an SE gate, as
    in :class:`~mmplug_involution.layers.DCDConv2d` (same parameter names:
    ``static``, ``q``, ``q_norm``, ``fusion_norm``, ``p``, ``squeeze``,
    ``squeeze_gate``, ``phi``, ``scale``). Unlike the conv layer, the bias
    is scaled by Lambda too, as the authors' is.

    Args:
        num_classes (int): classes.
        in_channels (int): C, the feature's channels.
        latent_dim (int): L. Default 32.
        squeeze_channels (int): S. Default 32.
        dropout_ratio (float): dropout on the feature before the classifier
            (both branches), as the authors' ``--dropout``. Default 0.
        init_cfg (dict, optional): Default: normal (std 0.01) linear
            weights and zero biases, as mmpretrain's ``LinearClsHead`` (and
            the authors) initialise them.
        **kwargs: ``ClsHead``'s ``loss``, ``topk``, ``cal_acc``.

    Shapes:
        feats[-1]: (N, C) -> logits (N, num_classes).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 latent_dim: int = 32,
                 squeeze_channels: int = 32,
                 dropout_ratio: float = 0.,
                 init_cfg: Optional[dict] = dict(
                     type='Normal', layer='Linear', std=0.01),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        for name, value in (('num_classes', num_classes), ('in_channels',
                                                           in_channels),
                            ('latent_dim', latent_dim), ('squeeze_channels',
                                                         squeeze_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got '
                                 f'{value!r}.')
        if not 0 <= dropout_ratio < 1:
            raise ValueError(f'dropout_ratio must be in [0, 1), got '
                             f'{dropout_ratio}.')
        self.num_classes, self.in_channels = num_classes, in_channels
        self.latent_dim = latent_dim
        self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio else None
        self.static = nn.Linear(in_channels, num_classes)  # W0, b
        self.q = nn.Linear(in_channels, latent_dim, bias=False)
        self.q_norm = nn.BatchNorm1d(latent_dim)
        self.fusion_norm = nn.BatchNorm1d(latent_dim)
        self.p = nn.Linear(latent_dim, num_classes, bias=False)
        self.squeeze = nn.Linear(in_channels, squeeze_channels, bias=False)
        self.squeeze_gate = nn.Linear(
            squeeze_channels, squeeze_channels, bias=False)
        self.phi = nn.Linear(squeeze_channels, latent_dim**2, bias=False)
        self.scale = nn.Linear(squeeze_channels, num_classes, bias=False)

    def pre_logits(self, feats: Tuple[Tensor]) -> Tensor:
        """The last stage's feature (N, C), dropped out in training."""
        x = feats[-1]
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'DCDClsHead takes a pooled (N, {self.in_channels}) '
                f'feature, got {tuple(x.shape)}: put a GlobalAveragePooling '
                f'neck before it, or set in_channels.')
        return x if self.dropout is None else self.dropout(x)

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        """(N, C) feature (last of ``feats``) -> (N, num_classes)."""
        x = self.pre_logits(feats)
        phi, scale = dcd_dynamic_branch(self, x)
        z = self.q_norm(self.q(x))  # (N, L)
        fused = torch.bmm(
            phi.view(-1, self.latent_dim, self.latent_dim), z[:, :, None])
        fused = self.fusion_norm(fused.squeeze(2)) + z
        return self.p(fused) + scale * self.static(x)
