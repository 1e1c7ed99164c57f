"""Drawn examples of a test split: the predicted scene graph of its first images as PNG + JSON.

The test job (and the test after training) call :func:`draw_examples` after scoring a split, so a
run ends with something to look at beside the metric table and the per-predicate plot
(``TEST.DRAW_IMAGES`` images, 0 = none). The model sees exactly what the evaluation showed it (the
test loader's mapped inputs, so the protocol's GT visibility holds); the drawing is the one of
``tools/predict.py`` (:func:`sgg.utils.visualize.draw_scene_graph`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import List, Sequence

import torch

from sgg.utils.device import autocast
from sgg.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["draw_examples"]


def draw_examples(model: torch.nn.Module, loader, out_dir: str, num_images: int = 1, dtype: str = "float32",
                  top_k: int = 10) -> List[str]:
    """Predict the first ``num_images`` images of ``loader`` (a test loader: ``loader.dataset`` maps
    ``loader.dataset.dataset``) with ``model`` and write ``scene_graph_<image_id>.png`` (image,
    graph and ranked top-``top_k`` relations) and ``.json`` (:func:`~sgg.structures.graph_json.graph_to_json`,
    top 50 relations) under ``out_dir``. Returns the PNG paths."""
    from sgg.data.datasets.vg150 import load_image
    from sgg.structures.graph_json import graph_to_json
    from sgg.utils.visualize import draw_scene_graph, save_png

    mapped, dataset = loader.dataset, loader.dataset.dataset
    n = min(int(num_images), len(mapped))
    if n <= 0:
        return []
    batch = [mapped[i] for i in range(n)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, dtype):
            graphs = model(batch)
    finally:
        model.train(was_training)
    os.makedirs(out_dir, exist_ok=True)
    paths: List[str] = []
    for i, (d, graph) in enumerate(zip(batch, graphs)):
        info = dataset[i]
        graph = graph.to("cpu")
        if tuple(graph.image_size) != (int(info["height"]), int(info["width"])):
            graph = graph.resized((int(info["height"]), int(info["width"])))
        image = load_image(info["file_name"])
        graph_json = graph_to_json(graph, _names(dataset, "ind_to_classes"), _names(dataset, "ind_to_predicates"),
                                   top_k_relations=50, image=os.path.basename(info["file_name"]))
        stem = os.path.join(out_dir, f"scene_graph_{int(d['image_id'])}")
        atomic_write_text(stem + ".json", json.dumps(graph_json, indent=1))
        paths.append(save_png(stem + ".png", draw_scene_graph(image, graph_json, top_k=top_k)))
    return paths


def _names(dataset, attr: str) -> Sequence[str]:
    names = getattr(dataset, attr, None)
    if names is None:
        raise AttributeError(f"{type(dataset).__name__} has no {attr}: drawing needs the class and predicate names")
    return names
