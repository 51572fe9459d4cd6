"""Classification heads (on mmpretrain's ``ClsHead``)."""
from .dcd_cls_head import DCDClsHead

__all__ = ['DCDClsHead']
