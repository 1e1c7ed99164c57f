"""The load step: everything that reads files to initialise a freshly built model.

Build first, load after (as detectron2's ``build_model`` + ``Checkpointer``, timm's
``model_cls(**kw)`` + ``load_pretrained``): the builders in :mod:`sgg.modeling` take plain metadata and
never open a file; a trained model is restored by :class:`sgg.checkpoint.Checkpointer`; the pieces
that initialise a model BEFORE training are read here, by :func:`load_pretrained`:

* ``MODEL.PRETRAINED_DETECTOR_CKPT``: the two-stage model's detector (sgg's checkpoints and SGB's,
  :func:`load_detector_checkpoint`); the relation head's object / union branches then start from the
  detector's box head, as in SGB.
* ``MODEL.BACKBONE.WEIGHTS`` / ``MODEL.ONESTAGE.BACKBONE_WEIGHTS``: ImageNet weights of the backbone
  (:func:`load_backbone_weights`; torchvision-layout ResNets, or timm's own file handling).
* ``GLOVE_DIR``: the GloVe class-name embeddings of predictors that have them
  (``word_vector_specs`` / ``set_word_vectors``; :mod:`sgg.modeling.relation.word_vectors`).

``MODEL.WEIGHT`` is not read here: the trainer loads it after this step when there is nothing to
resume (``Checkpointer.resume_or_load``), sgg's own checkpoints and Scene-Graph-Benchmark / PE-Net
relation checkpoints alike (the latter converted strictly by
:func:`~sgg.checkpoint.sgb.load_sgb_relation_checkpoint`, re-exported here).

Only local files are read; nothing is downloaded. Loading consumes no random numbers, so a model
built and then loaded equals one whose constructor had read the files.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from sgg.checkpoint import Checkpointer, load_model_state, read_state_dict
from sgg.checkpoint.sgb import (
    format_report,
    is_sgb_checkpoint,
    load_sgb_relation_checkpoint,
    sgb_convention_mismatches,
    sgb_to_sgg_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = ["load_backbone_weights", "load_detector_checkpoint", "load_matching", "load_pretrained",
           "load_pretrained_word_vectors", "load_sgb_relation_checkpoint"]

# Top-level modules of FasterRCNNDetector's state dict.
_DETECTOR_ROOTS = ("backbone.", "rpn.", "roi_heads.")


def load_matching(module: nn.Module, state: Dict[str, torch.Tensor], source: str,
                  ignore_prefixes: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
    """Copy ``state`` into ``module`` by key; a shape mismatch is an error naming key and shapes.

    Returns ``(missing, unexpected)`` key lists (logged), ignoring keys under ``ignore_prefixes``.
    """
    own = module.state_dict()
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"{source}: shape mismatch for '{k}': checkpoint {tuple(v.shape)} "
                             f"vs model {tuple(own[k].shape)}")
    result = module.load_state_dict(state, strict=False)
    skip = tuple(ignore_prefixes)
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(skip)]
    logger.info("%s: loaded %d tensors; %d missing %s; %d unexpected %s", source,
                len(state) - len(result.unexpected_keys), len(missing), missing[:10],
                len(unexpected), unexpected[:10])
    return missing, unexpected


def load_detector_checkpoint(model: nn.Module, path: str, prefix: str = "") -> Dict[str, List[str]]:
    """Load a detector checkpoint: sgg's own, or Scene-Graph-Benchmark's (maskrcnn_benchmark names).

    ``path`` is a file or a directory whose ``last_checkpoint`` names one (SGB's test command
    passes the training OUTPUT_DIR as ``MODEL.PRETRAINED_DETECTOR_CKPT``). The state dict is read
    from ``"model"`` (or a bare state dict; ``"optimizer"``, ``"scheduler"``, ``"iteration"`` are
    ignored) and ``module.`` is stripped. With ``prefix`` only keys under it are used (prefix
    removed), e.g. ``prefix="detector."``; without one, a whole sgg relation-model checkpoint
    (``detector.*`` keys only) is recognised and its detector taken.

    An SGB file (:func:`~sgg.checkpoint.sgb.is_sgb_checkpoint`) is converted with
    :func:`~sgg.checkpoint.sgb.sgb_to_sgg_state_dict`: anchor buffers are ignored, attribute / relation
    heads and unknown keys are skipped, and a warning lists the SGB_COMPAT config keys the model
    does not follow (see :mod:`sgg.checkpoint.sgb`).

    A tensor whose shape differs from the model's raises :class:`sgg.checkpoint.CheckpointError`
    naming the key(s) and both shapes. Returns ``{"loaded": [...], "missing": [...],
    "unexpected": [...], "skipped": [...], "format": "sgg" | "sgb"}`` (sgg key names, except
    ``skipped``/``unexpected`` which name the file's keys; logged).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"detector checkpoint not found: '{path}'. Point MODEL.PRETRAINED_DETECTOR_CKPT at SGB's "
            f"pretrained_faster_rcnn/model_final.pth (read as is), a file of tools/convert_sgb_checkpoint.py, "
            f"or a detector trained with tools/detector_train_net.py (a file, or its OUTPUT_DIR).")
    path = Checkpointer(model).resolve(path)
    state = read_state_dict(path, "MODEL.PRETRAINED_DETECTOR_CKPT")
    if not prefix and not any(k.startswith(_DETECTOR_ROOTS) for k in state) \
            and any(k.startswith("detector.") for k in state):
        prefix = "detector."
        logger.info("'%s' is a whole-model checkpoint: loading its 'detector.*' tensors", path)
    if prefix:
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        if not state:
            raise KeyError(f"detector checkpoint '{path}' has no key starting with '{prefix}'")
    own = model.state_dict()
    if is_sgb_checkpoint(state):
        state, report = sgb_to_sgg_state_dict(state, own)
        logger.info("%s", format_report(report, f"SGB detector checkpoint '{path}'"))
        for fix in sgb_convention_mismatches(model):
            logger.warning("'%s' is an SGB (maskrcnn_benchmark) detector; for its numbers set %s", path, fix)
        load_model_state(model, state, source=f"SGB detector checkpoint '{path}'")
        return {"loaded": list(state), "missing": report["missing"], "unexpected": [],
                "skipped": report["skipped"], "format": "sgb"}
    missing, unexpected = load_model_state(model, state, source=f"detector checkpoint '{path}'")
    loaded = [k for k in state if k in own]
    logger.info("detector checkpoint '%s': %d tensors loaded, %d missing, %d unexpected", path, len(loaded),
                len(missing), len(unexpected))
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected, "skipped": unexpected,
            "format": "sgg"}


def load_backbone_weights(backbone: nn.Module, path: str, key: str = "MODEL.BACKBONE.WEIGHTS") -> None:
    """ImageNet weights from the local file ``path`` into ``backbone`` (``key`` names the setting in
    errors). timm backbones (``body.timm_name``): timm builds its pretrained copy of the same model
    from the file (its own key filtering and resizing), whose weights are copied in; ResNets
    (:class:`~sgg.modeling.backbone.resnet_fpn.ResNetFPN`'s ``body``,
    :class:`~sgg.modeling.onestage.backbone.DilatedResNet`): a torchvision-layout state dict, ``fc.*``
    ignored, a shape mismatch an error naming the key."""
    body = getattr(backbone, "body", backbone)
    if hasattr(body, "timm_name"):
        _load_timm_weights(body, path, key)
        return
    load_matching(body, read_state_dict(path, key), f"{key} '{path}'", ignore_prefixes=("fc.",))


def _load_timm_weights(body: nn.Module, path: str, key: str) -> None:
    import timm

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key} file not found: '{path}' (local files only)")
    # timm reads the file into a second model; the random init of that copy must not move the
    # global RNG (build-then-load must equal building with the weights).
    with torch.random.fork_rng(devices=[]):
        ref = timm.create_model(body.timm_name, pretrained=True, features_only=True,
                                pretrained_cfg_overlay={"file": path}, **body.timm_kwargs)
    result = body.load_state_dict(ref.state_dict(), strict=False)
    missing = list(result.missing_keys)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{key} '{path}': timm's pretrained {body.timm_name} does not match the backbone "
                         f"({len(missing)} missing, e.g. {missing[:5]}; {len(unexpected)} unexpected, "
                         f"e.g. {unexpected[:5]})")
    logger.info("timm backbone %s: weights from '%s'", body.timm_name, path)


def load_pretrained_word_vectors(predictor: nn.Module, glove_dir: str, cache_dir: Optional[str] = None) -> bool:
    """GloVe rows for every set of names the predictor asks for (``word_vector_specs()``: ``{key:
    (names, dim)}``, e.g. object classes and predicates), read from ``glove_dir`` (optionally cached
    under ``cache_dir``), given to ``set_word_vectors(**{key: tensor})``. Returns whether the
    predictor takes word vectors. Without a GloVe file the seeded random vectors it was built with
    are kept (one warning names GLOVE_DIR and the file looked for)."""
    if not hasattr(predictor, "word_vector_specs"):
        return False
    from .relation.word_vectors import load_word_vectors

    vectors = {key: load_word_vectors(list(names), glove_dir or None, int(dim), cache_dir=cache_dir)
               for key, (names, dim) in predictor.word_vector_specs().items()}
    predictor.set_word_vectors(**vectors)
    return True


def load_pretrained(model: nn.Module, cfg) -> Dict[str, Any]:
    """The load step of a freshly built model of ``cfg`` (module docstring): the detector checkpoint,
    backbone weights and word vectors the config names. Returns what was read (for logs / tests)."""
    from .meta_arch.one_stage import OneStageSGG
    from .meta_arch.two_stage import TwoStageSGG

    done: Dict[str, Any] = {}
    if isinstance(model, TwoStageSGG):
        if cfg.MODEL.BACKBONE.WEIGHTS:
            load_backbone_weights(model.detector.backbone, cfg.MODEL.BACKBONE.WEIGHTS)
            done["backbone"] = cfg.MODEL.BACKBONE.WEIGHTS
        if cfg.MODEL.PRETRAINED_DETECTOR_CKPT:
            report = load_detector_checkpoint(model.detector, cfg.MODEL.PRETRAINED_DETECTOR_CKPT)
            logger.info("detector checkpoint %s: %d tensors loaded", cfg.MODEL.PRETRAINED_DETECTOR_CKPT,
                        len(report.get("loaded", [])))
            done["detector"] = cfg.MODEL.PRETRAINED_DETECTOR_CKPT
        else:
            logger.warning("MODEL.PRETRAINED_DETECTOR_CKPT is empty: the frozen detector keeps its initial "
                           "weights. Train one with tools/detector_train_net.py and pass its model_final.pth.")
        model.relation_head.init_from_detector(model.detector.box_head)
        cache = cfg.OUTPUT_DIR if cfg.MODEL.ROI_RELATION_HEAD.WORD_VECTOR_CACHE else None
        if load_pretrained_word_vectors(model.relation_head.predictor, cfg.GLOVE_DIR, cache):
            done["word_vectors"] = cfg.GLOVE_DIR
    elif isinstance(model, OneStageSGG):
        if cfg.MODEL.ONESTAGE.BACKBONE_WEIGHTS:
            load_backbone_weights(model.net.backbone, cfg.MODEL.ONESTAGE.BACKBONE_WEIGHTS,
                                  "MODEL.ONESTAGE.BACKBONE_WEIGHTS")
            done["backbone"] = cfg.MODEL.ONESTAGE.BACKBONE_WEIGHTS
    else:  # a bare detector (tools/detector_train_net.py)
        if cfg.MODEL.BACKBONE.WEIGHTS and hasattr(model, "backbone"):
            load_backbone_weights(model.backbone, cfg.MODEL.BACKBONE.WEIGHTS)
            done["backbone"] = cfg.MODEL.BACKBONE.WEIGHTS
    return done
