"""Data structures shared by every part: boxes, per-object instances, scene graphs."""
from .boxes import Boxes, box_area, pairwise_iou, union_boxes
from .instances import Instances
from .scene_graph import SceneGraph

__all__ = ["Boxes", "Instances", "SceneGraph", "box_area", "pairwise_iou", "union_boxes"]
