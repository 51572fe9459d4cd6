"""Dataset generators."""
from .cls_shapes import (CLS_SHAPES_CLASSES, generate_cls_shapes,
                         render_cls_shapes_image)
from .coco_shapes import generate_coco_shapes
from .seg_shapes import (SEG_IGNORE_INDEX, SEG_SHAPES_CLASSES,
                         SEG_SHAPES_PALETTE, generate_seg_shapes,
                         shapes_label_map)
from .shapes import SHAPES_CLASSES, ShapesImage, render_shapes_image

__all__ = [
    'SHAPES_CLASSES', 'ShapesImage', 'render_shapes_image',
    'generate_coco_shapes', 'SEG_SHAPES_CLASSES', 'SEG_SHAPES_PALETTE',
    'SEG_IGNORE_INDEX', 'generate_seg_shapes', 'shapes_label_map',
    'CLS_SHAPES_CLASSES', 'generate_cls_shapes', 'render_cls_shapes_image'
]
