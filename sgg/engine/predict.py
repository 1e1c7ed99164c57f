"""Predict scene graphs on your own images with a trained model (library side of tools/predict.py).

    from sgg.config import load_config
    from sgg.engine.predict import Predictor, graph_to_json

    cfg = load_config("configs/synthvg/motifs_predcls.yaml", ["MODEL.DEVICE", "cpu"])
    predictor = Predictor(cfg, "output/motifs_predcls")          # a .pth file or an OUTPUT_DIR
    graphs = predictor.predict(["photo.jpg", rgb_array], batch_size=4)
    doc = graph_to_json(graphs[0], predictor.class_names, predictor.predicate_names, image="photo.jpg")

    # relations among your own boxes (xyxy, original pixels): with labels PredCls, without SGCls
    graphs = predictor.predict_on_boxes(["photo.jpg"], boxes=[[[10, 20, 200, 310], [150, 40, 380, 300]]],
                                        labels=[["person", "horse"]])

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
* **Given boxes** (:meth:`Predictor.predict_on_boxes`, ``predict(..., boxes=...)``). Two-stage
  models only. Object ``i`` of the graph is input box ``i``, its box unchanged (clipped to the image,
  with a warning, only where it lies outside). With labels (class ids 1..C or class names) the model
  runs as in the PredCls evaluation (object scores 1); without labels as in the SGCls evaluation
  (the model classifies the boxes). A model trained in PredCls has no object classifier (modules
  that cannot learn in a protocol are not built), so there the detector's box head classifies the
  given boxes and its probabilities are the object scores (``Predictor.sgcls_labels``:
  "model" | "detector"). The boxes go through the test-time resize with the image, as the mapper
  does with GT boxes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sgg.protocol import protocol_from_config
from sgg.structures import Boxes, Instances, SceneGraph
from sgg.structures.image_batch import map_by_padded_shape
from sgg.utils.device import autocast

from sgg.structures.graph_json import graph_to_json  # noqa: F401  (re-exported)

from .loading import load_class_names, load_trained_model, resolve_weights  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "Predictor", "check_boxes", "graph_to_json", "list_images", "load_class_names",
           "read_image"]

#: file name extensions (lower case) taken as images when the input is a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = Union[str, os.PathLike, np.ndarray]
BoxesInput = Union[np.ndarray, torch.Tensor, Sequence[Sequence[float]]]
LabelsInput = Optional[Union[np.ndarray, torch.Tensor, Sequence[Union[int, str]]]]


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


def _valid_names(class_names: Sequence[str], k: int = 8) -> str:
    names = [str(n) for n in class_names[1:]]
    return ", ".join(repr(n) for n in names[:k]) + (f", ... ({len(names)} classes)" if len(names) > k else "")


def check_boxes(boxes: BoxesInput, labels: LabelsInput = None, class_names: Optional[Sequence[str]] = None,
                where: str = "boxes") -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Given boxes (and labels) of one image as float32 ``[N, 4]`` xyxy and int64 ``[N]`` class ids
    (or None), checked: four finite numbers per box with ``x2 > x1`` and ``y2 > y1``; labels one per
    box, each a class id ``1..C`` or a name of ``class_names`` (background first). ValueErrors
    start with ``where`` and name the box index."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    if not isinstance(boxes, np.ndarray):
        rows = list(boxes)
        for j, b in enumerate(rows):
            if isinstance(b, (str, bytes)) or not hasattr(b, "__len__") or len(b) != 4:
                raise ValueError(f"{where}: box {j} is {b!r}; every box is [x1, y1, x2, y2] (4 numbers, pixels "
                                 f"of the original image)")
        boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4) if rows else np.zeros((0, 4))
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: boxes are not numbers ({e})") from e
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{where}: boxes have shape {tuple(arr.shape)}; expected [N, 4] (x1, y1, x2, y2 per box)")
    for j, b in enumerate(arr):
        if not np.isfinite(b).all():
            raise ValueError(f"{where}: box {j} {b.tolist()} is not finite")
        if b[2] <= b[0] or b[3] <= b[1]:
            raise ValueError(f"{where}: box {j} {b.tolist()} has x2 <= x1 or y2 <= y1: boxes are [x1, y1, x2, y2] "
                             f"corners in pixels (not [x, y, width, height]) and must not be empty")
    if labels is None:
        return arr.astype(np.float32), None
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, (str, bytes)):
        raise ValueError(f"{where}: labels must be a list (one per box), got the string {labels!r}")
    labels = list(labels)
    if len(labels) != len(arr):
        raise ValueError(f"{where}: {len(labels)} labels for {len(arr)} boxes; give one label per box, or none "
                         f"(then the model classifies the boxes)")
    num = len(class_names) if class_names is not None else None
    index = {str(n): i for i, n in enumerate(class_names or [])}
    out = np.zeros(len(labels), dtype=np.int64)
    for j, lab in enumerate(labels):
        if isinstance(lab, str):
            i = index.get(lab, 0)
            if i == 0:
                what = "the background class" if lab in index else "not a class of this model"
                raise ValueError(f"{where}: label {lab!r} of box {j} is {what}; valid names: "
                                 f"{_valid_names(class_names or [])}")
        elif isinstance(lab, (bool, np.bool_)) or not isinstance(lab, (int, np.integer)) and not (
                isinstance(lab, (float, np.floating)) and float(lab).is_integer()):
            raise ValueError(f"{where}: label {lab!r} of box {j} is neither a class name nor a class id")
        else:
            i = int(lab)
            if i < 1 or (num is not None and i >= num):
                raise ValueError(f"{where}: label id {i} of box {j} is out of range: class ids are 1.."
                                 f"{(num - 1) if num else 'C'} (0 is the background)")
        out[j] = i
    return arr.astype(np.float32), out


def _clip_boxes(boxes: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """``boxes`` clipped to the ``width x height`` image (a warning when any lies outside); a box
    left empty by the clipping is a ValueError."""
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    moved = np.flatnonzero((clipped != boxes).any(axis=1))
    if len(moved):
        logger.warning("%s: %d boxes reach outside the %dx%d (WxH) image and were clipped to it (boxes %s)",
                       where, len(moved), width, height, ", ".join(str(int(j)) for j in moved[:10]))
        for j in moved:
            b = clipped[j]
            if b[2] <= b[0] or b[3] <= b[1]:
                raise ValueError(f"{where}: box {int(j)} {boxes[j].tolist()} lies outside the {width}x{height} "
                                 f"(WxH) image: boxes are in pixels of the original image")
    return clipped


def _empty_graph(height: int, width: int, num_predicates: int) -> SceneGraph:
    return SceneGraph(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0),
                      torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, num_predicates),
                      torch.zeros(0, dtype=torch.long), torch.zeros(0), (int(height), int(width)))


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
    ("model" | "detector"), ``sgcls_labels`` (who classifies given boxes without labels in
    :meth:`predict_on_boxes`: "model" | "detector").
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
        self._train_cfg, self._build_mode = cfg, build_mode
        self._models: Dict[str, torch.nn.Module] = {build_mode: self.model}
        #: who classifies given boxes without labels (predict_on_boxes, SGCls): the relation model's
        #: own object classifier, or the detector's box head for a model trained in PredCls (it has none)
        self.sgcls_labels = "detector" if self.trained_mode == "predcls" else "model"
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

    def _inputs(self, loaded: Sequence[Tuple[str, np.ndarray]], first_id: int,
                extras: Optional[Sequence[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
        batch = []
        for j, (name, img) in enumerate(loaded):
            key = f"{first_id + j}:{name}"
            self._pending[key] = img
            try:
                batch.append(self._mapper({"file_name": key, "image_id": first_id + j,
                                           "height": int(img.shape[0]), "width": int(img.shape[1]),
                                           **(extras[j] if extras is not None else {})}))
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

    def _model_for(self, mode: str) -> torch.nn.Module:
        """The model built for protocol ``mode`` (given boxes: 'predcls' or 'sgcls'), loaded once
        from the same checkpoint; tensors equal to the main model's are shared with it."""
        if mode not in self._models:
            logger.info("predictor: building the %s variant of the model for given boxes", mode)
            trained = load_trained_model(self._train_cfg, self.weights, device=self.device, protocol=mode)
            _share_tensors(trained.model, self.model)
            self._models[mode] = trained.model
        return self._models[mode]

    def _batch_size(self, batch_size: Optional[int]) -> int:
        bs = int(batch_size or self.cfg.TEST.IMS_PER_BATCH or 1)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return bs

    @torch.no_grad()
    def predict(self, images: Sequence[ImageInput], batch_size: Optional[int] = None,
                boxes: Optional[Sequence[BoxesInput]] = None,
                labels: Optional[Sequence[LabelsInput]] = None) -> List[SceneGraph]:
        """Scene graphs of ``images`` (paths or ``H x W x 3`` uint8 RGB arrays), one per image, in
        order: CPU float32 tensors, boxes in the original image's pixels clipped to it, relations
        sorted by triplet score descending. ``batch_size`` defaults to ``TEST.IMS_PER_BATCH``.
        ``boxes`` (and ``labels``): :meth:`predict_on_boxes`."""
        if boxes is not None:
            return self.predict_on_boxes(images, boxes, labels, batch_size=batch_size)
        if labels is not None:
            raise ValueError("labels were given without boxes: pass boxes=[...] (one [N, 4] array per image) too")
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        images = list(images)
        bs = self._batch_size(batch_size)
        graphs: List[SceneGraph] = []
        for start in range(0, len(images), bs):
            loaded = self._load(images[start:start + bs])
            batch = self._inputs(loaded, start)
            with self._autocast():
                out = self._forward(batch)
            graphs.extend(_finish(g) for g in out)
        return graphs

    @torch.no_grad()
    def predict_on_boxes(self, images: Sequence[ImageInput], boxes: Sequence[BoxesInput],
                         labels: Optional[Sequence[LabelsInput]] = None,
                         batch_size: Optional[int] = None) -> List[SceneGraph]:
        """Scene graphs over exactly the given boxes (two-stage models).

        Args:
            images: paths or ``H x W x 3`` uint8 RGB arrays (a single one is accepted).
            boxes: per image ``[N_i, 4]`` xyxy boxes in original image pixels (numpy, torch or lists).
            labels: None, or per image None / ``N_i`` class ids (1..C) or class names of
                :attr:`class_names`. With labels the image runs as in the PredCls evaluation
                (object scores 1), without as in SGCls (labels and scores from the model, or from the
                detector's box head for a model trained in PredCls: :attr:`sgcls_labels`).

        Object ``i`` of graph ``k`` is ``boxes[k][i]``, with that exact box (clipped to the image,
        with a warning, only where it reaches outside); relations cover every ordered pair
        (``n (n - 1)``, capped by ``MODEL.ROI_RELATION_HEAD.TEST_REL_TOP_K``), sorted by triplet score.
        """
        if self.cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
            raise NotImplementedError(
                f"relations for given boxes need a two-stage model (MODEL.META_ARCHITECTURE GeneralizedRCNN); "
                f"this is a {self.cfg.MODEL.META_ARCHITECTURE}, which predicts its own objects: use predict() "
                f"without boxes")
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images, boxes = [images], [boxes]
            labels = None if labels is None else [labels]
        images, boxes = list(images), list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"boxes are given for {len(boxes)} images but there are {len(images)} images: "
                             f"pass one [N, 4] box list per image")
        labels = [None] * len(images) if labels is None else list(labels)
        if len(labels) != len(images):
            raise ValueError(f"labels are given for {len(labels)} images but there are {len(images)} images: "
                             f"pass one label list (or None) per image")
        checked = [check_boxes(b, lab, self.class_names, where=f"image {k}" + (
            f" ('{os.fspath(images[k])}')" if isinstance(images[k], (str, os.PathLike)) else ""))
            for k, (b, lab) in enumerate(zip(boxes, labels))]
        bs = self._batch_size(batch_size)
        graphs: List[SceneGraph] = []
        for start in range(0, len(images), bs):
            loaded = self._load(images[start:start + bs])
            extras, kinds, given = [], [], []
            for j, (name, img) in enumerate(loaded):
                b, lab = checked[start + j]
                h, w = int(img.shape[0]), int(img.shape[1])
                b = _clip_boxes(b, h, w, where=f"image {start + j} ('{name}')")
                given.append(b)
                extras.append({"boxes": b, "labels": lab if lab is not None else np.zeros(len(b), np.int64)})
                kinds.append("empty" if len(b) == 0 else "predcls" if lab is not None
                             else "sgcls" if self.sgcls_labels == "model" else "detector")
            batch = self._inputs(loaded, start, extras)
            out: List[Optional[SceneGraph]] = [None] * len(batch)
            for kind in ("predcls", "sgcls", "detector"):
                idx = [j for j, k in enumerate(kinds) if k == kind]
                if not idx:
                    continue
                sub = [batch[j] for j in idx]
                with self._autocast():
                    if kind == "detector":
                        res = _relations_on_given_boxes(self._model_for("predcls"), sub)
                    else:
                        res = self._model_for(kind)(sub)
                for j, g in zip(idx, res):
                    out[j] = g
            for j, (name, img) in enumerate(loaded):
                if kinds[j] == "empty":
                    graphs.append(_empty_graph(img.shape[0], img.shape[1], len(self.predicate_names)))
                    continue
                g = _finish(out[j])
                if len(g) != len(given[j]):
                    raise RuntimeError(f"image {start + j} ('{name}'): the model returned {len(g)} objects for "
                                       f"{len(given[j])} given boxes")
                graphs.append(replace(g, boxes=torch.from_numpy(given[j].copy())))
        return graphs


def _share_tensors(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Make ``dst`` use ``src``'s parameters and buffers where both have one of that name, shape and
    dtype (two protocol variants of one checkpoint hold equal tensors): one copy in memory."""
    src_modules = dict(src.named_modules())
    for name, mod in dst.named_modules():
        other = src_modules.get(name)
        if other is None:
            continue
        for store, other_store in ((mod._parameters, other._parameters), (mod._buffers, other._buffers)):
            for key, t in list(store.items()):
                o = other_store.get(key)
                if t is not None and o is not None and o.shape == t.shape and o.dtype == t.dtype:
                    store[key] = o


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


def _relations_on_given_boxes(model, batch: Sequence[Dict[str, Any]]) -> List[SceneGraph]:
    """A two-stage PredCls model (no object classifier) on given boxes without labels: the
    detector's box head classifies the boxes (argmax over classes 1..C of its softmax; the score is
    that probability), the relation head sees the boxes with those labels, and the triplets are
    ranked with the detector's scores. Run in groups of equal padded shape, as the model does."""
    div = max(int(getattr(model.detector, "size_divisibility", 1)), 1)

    def run(inputs: List[Dict[str, Any]]) -> List[SceneGraph]:
        images, sizes = model.detector.preprocess(inputs)
        features = model.detector.backbone(images)
        boxes = [d["instances"].gt_boxes.tensor.to(images.device) for d in inputs]
        roi_heads = model.detector.roi_heads
        logits, _ = roi_heads.box_predictor(roi_heads.box_features(features, boxes, sizes))
        proposals = []
        for b, lg, size in zip(boxes, logits.split([len(b) for b in boxes]), sizes):
            prob = torch.softmax(lg.float(), dim=-1)
            labels = prob[:, 1:].argmax(dim=1) + 1
            proposals.append(Instances(size, boxes=Boxes(b), labels=labels,
                                       scores=prob.gather(1, labels[:, None]).squeeze(1)))
        out = []
        for g, p, d in zip(model.relation_head(features, proposals), proposals, inputs):
            g = SceneGraph.from_scores(g.boxes, g.labels, p.scores, g.rel_pairs, g.rel_scores, g.image_size)
            out.append(g.resized((int(d["height"]), int(d["width"]))))
        return out

    return map_by_padded_shape(list(batch), lambda d: d["image"], div, run)
