"""A scene graph as a JSON-ready dict (the output format of ``tools/predict.py`` and of the drawn
test images): :func:`graph_to_json`. Pure numpy on a :class:`~sgg.structures.SceneGraph`."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from .scene_graph import SceneGraph

__all__ = ["graph_to_json"]


def _name(names: Sequence[str], idx: int, what: str) -> str:
    if not 0 <= idx < len(names):
        raise ValueError(f"{what} id {idx} is out of range for the {len(names)} names given (background "
                         f"included): the names do not belong to this model")
    return str(names[idx])


def graph_to_json(graph: SceneGraph, class_names: Sequence[str], predicate_names: Sequence[str],
                  top_k_relations: Optional[int] = 50, score_threshold: float = 0.0,
                  image: Optional[str] = None) -> Dict[str, Any]:
    """A scene graph as a JSON-ready dict::

        {"image": image, "width": W, "height": H,
         "objects": [{"id", "box": [x1, y1, x2, y2], "label", "label_id", "score"}],
         "relations": [{"subject": id, "predicate", "predicate_id", "object": id, "score"}]}

    * ``relations``: the ``top_k_relations`` best (None or < 0: all) by triplet score, descending;
      ``score`` is the triplet score (predicate x subject x object score).
    * ``objects``: every object with ``score >= score_threshold`` plus every object a kept
      relation refers to, in id order. ``id`` is the object's index in ``graph`` (so ids need not
      be contiguous); boxes are xyxy pixels of the ``W x H`` image, clipped to it.
    * names: ``class_names[label_id]`` / ``predicate_names[predicate_id]`` (background first, as
      the dataset's ``ind_to_classes`` / ``ind_to_predicates``).
    """
    h, w = (int(v) for v in graph.image_size)
    boxes = graph.boxes.detach().float().cpu().numpy().reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    labels = graph.labels.detach().cpu().numpy().astype(np.int64)
    scores = graph.scores.detach().float().cpu().numpy()
    trip = graph.triplet_scores.detach().float().cpu().numpy()
    order = np.argsort(-trip, kind="stable")
    if top_k_relations is not None and top_k_relations >= 0:
        order = order[:top_k_relations]
    pairs = graph.rel_pairs.detach().cpu().numpy().reshape(-1, 2)[order]
    preds = graph.rel_labels.detach().cpu().numpy().astype(np.int64)[order]
    trip = trip[order]

    keep = scores >= score_threshold
    keep[pairs.reshape(-1)] = True
    objects = [{"id": int(i), "box": [round(float(v), 2) for v in boxes[i]],
                "label": _name(class_names, int(labels[i]), "object class"), "label_id": int(labels[i]),
                "score": round(float(scores[i]), 6)} for i in np.flatnonzero(keep)]
    relations = [{"subject": int(s), "predicate": _name(predicate_names, int(p), "predicate"),
                  "predicate_id": int(p), "object": int(o), "score": round(float(t), 6)}
                 for (s, o), p, t in zip(pairs, preds, trip)]
    return {"image": image, "width": w, "height": h, "objects": objects, "relations": relations}
