"""Predict scene graphs on your own images with a trained model (library side of tools/predict.py).

    from sgg.config import load_config
    from sgg.engine.predict import Predictor, graph_to_json

    cfg = load_config("configs/synthvg/motifs_predcls.yaml", ["MODEL.DEVICE", "cpu"])
    predictor = Predictor(cfg, "output/motifs_predcls")          # a .pth file or an OUTPUT_DIR
    graphs = predictor.predict(["photo.jpg", rgb_array], batch_size=4)
    doc = graph_to_json(graphs[0], predictor.class_names, predictor.predicate_names, image="photo.jpg")

What the predictor does:

* **Protocol.** User images carry no ground truth, so prediction always follows SGDet: the model
  finds the objects itself. A config in PredCls or SGCls logs one warning and is predicted as
  SGDet. An SGCls model has its own object classifier, so it simply runs in SGDet mode. A
  two-stage PredCls model has none (Motifs builds its object decoder only outside PredCls), so the
  detector's boxes, labels and scores are handed to its relation head in place of the GT objects,
  and the triplets are ranked by predicate score x both detection scores, as in SGDet.
  ``Predictor.object_labels`` says which source named the objects ("model" or "detector").
* **Classes and weights.** The model is loaded by :func:`sgg.engine.loading.load_trained_model`:
  ``weights`` (else ``MODEL.WEIGHT``) is a checkpoint file or a directory whose ``last_checkpoint``
  names one (a training OUTPUT_DIR); the class and predicate names come from the checkpoint's
  metadata (older checkpoints: the dicts json of ``DATASETS.TRAIN[0]``); the EMA weights are used
  when the file has them. No dataset, GloVe file or backbone weights are read, and nothing is
  written to OUTPUT_DIR.
* **Images.** Paths (read with EXIF orientation applied: the frame a viewer shows) or ``H x W x 3``
  uint8 RGB arrays go through the test-time resize of the test loader
  (:class:`~sgg.data.mapper.SceneGraphMapper`, ``is_train=False``), are batched, and run on
  ``MODEL.DEVICE`` under ``torch.no_grad`` and the autocast of ``DTYPE``, as in the evaluation.
  Graphs come back on the CPU in float32, boxes in original image pixels, clipped to the image.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sgg.protocol import protocol_from_config
from sgg.structures import SceneGraph
from sgg.utils.device import autocast

from .loading import load_class_names, load_trained_model, resolve_weights  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "Predictor", "graph_to_json", "list_images", "load_class_names", "read_image"]

#: file name extensions (lower case) taken as images when the input is a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = Union[str, os.PathLike, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """A user image as uint8 ``[H, W, 3]`` RGB, EXIF orientation applied.

    Raises FileNotFoundError or ValueError naming the file when it is missing or cannot be decoded.
    """
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: '{path}'")
    buf = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise ValueError(f"cannot read image '{path}' ({buf.size} bytes): the file is not an image OpenCV can "
                         f"decode ({', '.join(IMAGE_EXTENSIONS)}) or it is corrupt. Replace or remove it.")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def list_images(path: Union[str, os.PathLike]) -> List[str]:
    """``path`` itself when it is a file, else the images directly inside the folder ``path``
    (extensions :data:`IMAGE_EXTENSIONS`, any case), sorted by name. Errors name the path."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"input not found: '{path}' is neither an image file nor a folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise FileNotFoundError(f"no images in folder '{path}': accepted extensions are "
                                f"{', '.join(IMAGE_EXTENSIONS)} (sub-folders are not searched)")
    return files


def _as_rgb_array(image: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        what = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise ValueError(f"input {index} is a {what}; expected an image path or an H x W x 3 uint8 RGB array")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"input {index} is an empty image of shape {image.shape}")
    return image


# ---------------------------------------------------------------------------------------------
# Predictor
# ---------------------------------------------------------------------------------------------
class Predictor:
    """A trained SGG model (``MODEL.META_ARCHITECTURE``: ``GeneralizedRCNN`` or ``OneStageSGG``)
    ready to run on user images with the SGDet protocol (module docstring).

    Args:
        cfg: the model's config (the training config; not modified).
        weights: checkpoint file or directory with ``last_checkpoint``; "" -> ``MODEL.WEIGHT``.
        device: overrides ``MODEL.DEVICE`` (e.g. "cpu").

    Attributes: ``model`` (eval mode), ``cfg`` (the SGDet config actually used), ``class_names`` /
    ``predicate_names`` (background first), ``device``, ``weights`` (the file loaded),
    ``trained_mode`` (the config's protocol), ``mode`` ("sgdet"), ``object_labels``
    ("model" | "detector").
    """

    def __init__(self, cfg, weights: str = "", *, device: Optional[Union[str, torch.device]] = None) -> None:
        from sgg.data.mapper import SceneGraphMapper

        trained_mode = protocol_from_config(cfg)
        two_stage = cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
        # Motifs in PredCls has no object decoder: keep its mode and feed it the detections.
        build_mode = "predcls" if (two_stage and trained_mode == "predcls") else "sgdet"
        trained = load_trained_model(cfg, weights, device=device, protocol=build_mode)
        self.trained_mode = trained.trained_protocol
        self.mode = "sgdet"
        self.object_labels = "detector" if build_mode == "predcls" else "model"
        if self.trained_mode != "sgdet":
            how = ("the detector's boxes, labels and scores are given to its relation head in place of GT "
                   "objects" if build_mode == "predcls" else "the model detects and classifies the objects itself")
            logger.warning("the config's protocol is %s (MODEL.ROI_RELATION_HEAD.USE_GT_BOX/USE_GT_OBJECT_LABEL), "
                           "but user images have no ground-truth boxes: predicting with the SGDet protocol (%s)",
                           self.trained_mode, how)
        self.model, self.cfg, self.device, self.weights = trained.model, trained.cfg, trained.device, trained.weights
        self.class_names, self.predicate_names = trained.class_names, trained.predicate_names
        self._mapper = SceneGraphMapper.from_config(self.cfg, is_train=False, mode="sgdet", image_loader=self._image_of)
        self._pending: Dict[str, np.ndarray] = {}
        logger.info("predictor: %s from %s on %s (trained %s, predicting sgdet; object labels from the %s), "
                    "%d classes, %d predicates", self.cfg.MODEL.META_ARCHITECTURE, self.weights, self.device,
                    self.trained_mode, self.object_labels, len(self.class_names) - 1, len(self.predicate_names) - 1)

    # -- inputs -----------------------------------------------------------------------------------
    def _image_of(self, name: str) -> np.ndarray:
        return self._pending[name]

    def _load(self, images: Sequence[ImageInput]) -> List[Tuple[str, np.ndarray]]:
        out = []
        for i, im in enumerate(images):
            if isinstance(im, (str, os.PathLike)):
                out.append((os.fspath(im), read_image(im)))
            else:
                out.append((f"<array {i}>", _as_rgb_array(im, i)))
        return out

    def _inputs(self, loaded: Sequence[Tuple[str, np.ndarray]], first_id: int) -> List[Dict[str, Any]]:
        batch = []
        for j, (name, img) in enumerate(loaded):
            key = f"{first_id + j}:{name}"
            self._pending[key] = img
            try:
                batch.append(self._mapper({"file_name": key, "image_id": first_id + j,
                                           "height": int(img.shape[0]), "width": int(img.shape[1])}))
            finally:
                del self._pending[key]
        return batch

    # -- running ----------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, self.cfg.DTYPE)

    def _forward(self, batch: Sequence[Dict[str, Any]]) -> List[SceneGraph]:
        if self.object_labels == "detector":
            return _relations_on_detections(self.model, batch)
        return self.model(batch)

    @torch.no_grad()
    def predict(self, images: Sequence[ImageInput], batch_size: Optional[int] = None) -> List[SceneGraph]:
        """Scene graphs of ``images`` (paths or ``H x W x 3`` uint8 RGB arrays), one per image, in
        order: CPU float32 tensors, boxes in the original image's pixels clipped to it, relations
        sorted by triplet score descending. ``batch_size`` defaults to ``TEST.IMS_PER_BATCH``."""
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        images = list(images)
        bs = int(batch_size or self.cfg.TEST.IMS_PER_BATCH or 1)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        graphs: List[SceneGraph] = []
        for start in range(0, len(images), bs):
            loaded = self._load(images[start:start + bs])
            batch = self._inputs(loaded, start)
            with self._autocast():
                out = self._forward(batch)
            graphs.extend(_finish(g) for g in out)
        return graphs


def _finish(graph: SceneGraph) -> SceneGraph:
    """CPU, float32 scores, boxes clipped to the image."""
    g = graph.to("cpu")
    h, w = g.image_size
    boxes = g.boxes.float().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return replace(g, boxes=boxes, scores=g.scores.float(), rel_scores=g.rel_scores.float(),
                   triplet_scores=g.triplet_scores.float())


def _relations_on_detections(model, batch: Sequence[Dict[str, Any]]) -> List[SceneGraph]:
    """A two-stage PredCls model on detections: the detector's boxes and labels stand in for the
    GT objects of its relation head; objects are scored by the detector and the triplets re-ranked
    with those scores (SGDet's ranking). Images are run in groups of equal padded shape, as
    :class:`~sgg.modeling.meta_arch.two_stage.TwoStageSGG` does, so results do not depend on the
    batch."""
    groups: Dict[Tuple[int, int], List[int]] = {}
    div = max(int(getattr(model.detector, "size_divisibility", 1)), 1)
    for i, d in enumerate(batch):
        h, w = d["image"].shape[-2:]
        groups.setdefault((-(-int(h) // div) * div, -(-int(w) // div) * div), []).append(i)
    graphs: List[Optional[SceneGraph]] = [None] * len(batch)
    for idx in groups.values():
        inputs = [batch[i] for i in idx]
        images, sizes = model.detector.preprocess(inputs)
        features = model.detector.backbone(images)
        detections = model.detector.detect(images, sizes, features)
        for i, g, det in zip(idx, model.relation_head(features, detections), detections):
            g = SceneGraph.from_scores(g.boxes, g.labels, det.scores.float(), g.rel_pairs, g.rel_scores,
                                       g.image_size)
            graphs[i] = g.resized((int(batch[i]["height"]), int(batch[i]["width"])))
    return graphs  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
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
