"""Dataset generators."""
from .coco_shapes import SHAPES_CLASSES, generate_coco_shapes

__all__ = ['SHAPES_CLASSES', 'generate_coco_shapes']
