"""One way to load a trained model for inference, shared by the test job, prediction and export.

:func:`load_trained_model` needs a config and a checkpoint, never the training set: the checkpoint
carries the model's ``metadata`` (class and predicate names, protocol, meta-architecture, train
predicate counts; see :func:`sgg.modeling.meta_arch.build.model_metadata`). The model is built from
that metadata (no GloVe, backbone weights or detector checkpoint are read: the checkpoint replaces
them all) and the checkpoint's weights are loaded into it (the EMA weights when it has them: what
validation used; ``prefer_ema=False`` for the raw weights). Checkpoints written before the metadata
existed fall back to the class names of the dicts json of ``DATASETS.TRAIN[0]`` (that one json file).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from sgg.checkpoint import LAST_CHECKPOINT, CheckpointError, Checkpointer, load_checkpoint_file, load_model_state
from sgg.checkpoint.sgb import is_sgb_checkpoint, load_sgb_relation_checkpoint
from sgg.protocol import MODES, protocol_from_config
from sgg.utils.device import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["TrainedModel", "load_class_names", "load_trained_model", "resolve_weights"]


@dataclass
class TrainedModel:
    """A trained model ready for inference (eval mode, on ``device``) and what describes it.

    ``cfg``: the (frozen) config the model was built with (its protocol may differ from the
    training config's when ``protocol`` was given); ``weights``: the file loaded; ``trained_protocol``:
    the protocol the model was trained in; ``metadata``: the checkpoint's metadata (or the one
    rebuilt for an old checkpoint); ``ema``: whether the EMA weights were loaded.
    """

    model: nn.Module
    cfg: Any
    class_names: List[str]
    predicate_names: List[str]
    weights: str
    device: torch.device
    trained_protocol: str
    metadata: Dict[str, Any] = field(default_factory=dict)
    ema: bool = False

    @property
    def protocol(self) -> str:
        return protocol_from_config(self.cfg)

    @property
    def predicate_counts(self) -> Optional[List[int]]:
        return self.metadata.get("predicate_counts")


def resolve_weights(path: str) -> str:
    """A checkpoint file, or the file named by ``<dir>/last_checkpoint``. Errors name the flag."""
    if not path:
        raise ValueError("no model weights given: pass --weights CKPT_OR_OUTPUT_DIR or set MODEL.WEIGHT")
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights not found: '{path}' (--weights / MODEL.WEIGHT). Pass a checkpoint "
                                f"file (.pth) or a training OUTPUT_DIR holding '{LAST_CHECKPOINT}'.")
    if os.path.isdir(path):
        try:
            resolved = Checkpointer(nn.Module()).resolve(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (--weights / MODEL.WEIGHT)") from e
        if not os.path.isfile(resolved):
            raise FileNotFoundError(f"'{os.path.join(path, LAST_CHECKPOINT)}' names '{resolved}', which does not "
                                    f"exist (--weights / MODEL.WEIGHT): pass the checkpoint file instead")
        return resolved
    return path


def load_class_names(cfg) -> Tuple[List[str], List[str]]:
    """(object class names, predicate names) of ``DATASETS.TRAIN[0]`` (its dicts json only),
    background at index 0: the names of a checkpoint written without metadata."""
    from sgg.data.catalog import get_dataset_files
    from sgg.data.datasets import dataset_class_names

    if not cfg.DATASETS.TRAIN:
        raise ValueError("the checkpoint has no metadata and DATASETS.TRAIN is empty: the class and predicate "
                         "names are taken from the training dataset of the config (its VG-SGG-dicts json, or "
                         "its train/_annotations.coco.json)")
    try:
        files = get_dataset_files(cfg.DATASETS.TRAIN[0], cfg.DATASETS.DATA_DIR)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"the checkpoint has no metadata (it predates them), so the class names are read "
                                f"from the training dataset of the config: {e}") from e
    names_file = files.dict_file if files.format == "vg150" else (files.source_files() or ("",))[0]
    if not os.path.isfile(names_file):
        raise FileNotFoundError(
            f"the checkpoint has no metadata, so the class names of {cfg.DATASETS.TRAIN[0]} (DATASETS.TRAIN) are "
            f"read from '{names_file}', which does not exist. Set DATASETS.DATA_DIR to the folder holding the "
            f"training data (only this json is needed), or use a checkpoint written by this version.")
    return dataset_class_names(files)


def _model_weights(ckpt: Mapping[str, Any], path: str, prefer_ema: bool = True
                   ) -> Tuple[Mapping[str, torch.Tensor], bool]:
    """The EMA weights when the checkpoint has them and ``prefer_ema`` (as
    ``Checkpointer.load(prefer_ema=True)``), else its ``model`` weights."""
    if "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no 'model' entry (keys: {sorted(ckpt)})")
    ema = ckpt.get("ema")
    if prefer_ema and isinstance(ema, Mapping) and isinstance(ema.get("model"), Mapping):
        logger.info("using the EMA weights of %s (%d updates)", path, int(ema.get("updates", 0)))
        return ema["model"], True
    return ckpt["model"], False


def _with_protocol(cfg, protocol: Optional[str], device: Optional[Union[str, torch.device]]):
    from sgg.engine.methods import select_training_method

    cfg = select_training_method(cfg, validate=False).inference_config(cfg).clone()
    cfg.defrost()
    if device is not None:
        cfg.MODEL.DEVICE = str(device)
    if protocol is not None:
        if protocol not in MODES:
            raise ValueError(f"protocol must be one of {MODES}, got {protocol!r}")
        rh = cfg.MODEL.ROI_RELATION_HEAD
        rh.USE_GT_BOX = protocol != "sgdet"
        rh.USE_GT_OBJECT_LABEL = protocol == "predcls"
    cfg.freeze()
    return cfg


def load_trained_model(cfg, weights: str = "", *, device: Optional[Union[str, torch.device]] = None,
                       protocol: Optional[str] = None, prefer_ema: bool = True,
                       allow_unplaced: bool = False) -> TrainedModel:
    """The trained model of ``cfg`` from ``weights`` (a checkpoint file or a directory whose
    ``last_checkpoint`` names one; "" = ``MODEL.WEIGHT``), in eval mode on ``device`` (default
    ``MODEL.DEVICE``).

    ``protocol`` builds the model for another protocol than the config's (prediction on user images
    builds SGDet; a two-stage PredCls model is built as PredCls and fed detections). The
    training method's :meth:`~sgg.engine.methods.TrainingMethod.inference_config` applies (an STDG
    student reads RGB only). Every tensor of the model must come from the checkpoint; a two-stage
    checkpoint without detector tensors takes its detector from ``MODEL.PRETRAINED_DETECTOR_CKPT``.
    A Scene-Graph-Benchmark / PE-Net relation checkpoint (maskrcnn_benchmark names, no metadata: the
    class names come from ``DATASETS.TRAIN[0]``) is converted on the fly
    (:func:`sgg.checkpoint.sgb.load_sgb_relation_checkpoint`); its tensors without a place in
    the model raise :class:`~sgg.checkpoint.sgb.UnplacedTensorsError` unless ``allow_unplaced``.
    Errors name the file and the keys.
    """
    from sgg.modeling.meta_arch import build_sgg_model

    trained_protocol = protocol_from_config(cfg)
    cfg = _with_protocol(cfg, protocol, device)
    path = resolve_weights(weights or cfg.MODEL.WEIGHT)
    logger.info("loading checkpoint %s (trained model for inference)", path)
    ckpt = load_checkpoint_file(path)
    state, used_ema = _model_weights(ckpt, path, prefer_ema)
    metadata = dict(ckpt.get("metadata") or {})
    del ckpt
    if metadata.get("class_names") and metadata.get("predicate_names"):
        classes, predicates = list(metadata["class_names"]), list(metadata["predicate_names"])
        trained_protocol = metadata.get("protocol", trained_protocol)
        arch = metadata.get("meta_architecture", cfg.MODEL.META_ARCHITECTURE)
        if arch != cfg.MODEL.META_ARCHITECTURE:
            raise CheckpointError(f"checkpoint {path} holds a {arch} model, the config builds "
                                  f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}: use the model's own config")
    else:
        logger.info("checkpoint %s has no metadata (written before it was stored): class names from the "
                    "dataset's dicts json", path)
        classes, predicates = load_class_names(cfg)
    statistics = {"obj_classes": classes, "rel_classes": predicates,
                  "predicate_counts": metadata.get("predicate_counts")}
    model = build_sgg_model(cfg, statistics, len(classes), len(predicates))
    if is_sgb_checkpoint(state):
        if not hasattr(model, "relation_head"):
            raise CheckpointError(f"checkpoint {path} is a Scene-Graph-Benchmark (maskrcnn_benchmark) model: only "
                                  f"two-stage relation models load it (MODEL.META_ARCHITECTURE)")
        load_sgb_relation_checkpoint(model, state, f"SGB relation checkpoint {path}", allow_unplaced=allow_unplaced)
        missing = []
    else:
        missing, _ = load_model_state(model, state, source=path)
    if missing and all(k.startswith("detector.") for k in missing) and hasattr(model, "detector"):
        if not cfg.MODEL.PRETRAINED_DETECTOR_CKPT:
            raise CheckpointError(
                f"checkpoint {path} has no detector tensors ('detector.*') and MODEL.PRETRAINED_DETECTOR_CKPT is "
                f"empty: set MODEL.PRETRAINED_DETECTOR_CKPT to the detector checkpoint the relation model was "
                f"trained on (e.g. its model_final.pth)")
        from sgg.modeling.pretrained import load_detector_checkpoint

        logger.info("checkpoint %s has no detector tensors: the detector comes from MODEL.PRETRAINED_DETECTOR_CKPT=%s",
                    path, cfg.MODEL.PRETRAINED_DETECTOR_CKPT)
        load_detector_checkpoint(model.detector, cfg.MODEL.PRETRAINED_DETECTOR_CKPT)
        missing = []
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
        raise CheckpointError(
            f"checkpoint {path} lacks {len(missing)} tensors of the {cfg.MODEL.META_ARCHITECTURE} model built "
            f"from this config ({shown}): is it a checkpoint of this config's model (same "
            f"MODEL.ROI_RELATION_HEAD.PREDICTOR, protocol and sizes)?")
    dev = resolve_device(cfg.MODEL.DEVICE)
    model = model.to(dev).eval()
    return TrainedModel(model=model, cfg=cfg, class_names=classes, predicate_names=predicates, weights=path,
                        device=dev, trained_protocol=trained_protocol, metadata=dict(model.metadata),
                        ema=used_ema)
