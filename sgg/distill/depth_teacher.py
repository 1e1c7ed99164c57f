"""STDG depth teacher for the one-stage model (specs/onestage.md, "STDG depth teacher").

Two stages, chosen by ``MODEL.STDG.MODE``:

* ``"depth"`` (stage 1): the one-stage model trained on the depth encoding alone. The model is a
  plain :class:`~sgg.modeling.meta_arch.one_stage.OneStageSGG` with ``input_key="depth"``: it
  reads the mapper's ``depth`` (``INPUT.LOAD_DEPTH`` True, ``INPUT.DEPTH_ENCODING`` "hha" or
  "normalized": ``[3, H, W]`` in [0, 1]) normalised with ``MODEL.STDG.DEPTH_PIXEL_MEAN`` /
  ``DEPTH_PIXEL_STD`` (0 / 1: the encoding is already normalised).
* ``"combine"`` (stage 2): an RGB student of the same architecture (the config's model) trained on
  GT plus :class:`DepthTeacherDistillation` (a :class:`~sgg.distill.base.Distillation`), a trainer
  ``extra_losses`` term holding the stage-1 model (``MODEL.STDG.TEACHER_WEIGHTS``, EMA weights
  preferred) as a frozen teacher that sees the batch's depth encoding:

  - ``loss_offset_distill`` = ``OFFSET_WEIGHT`` x :func:`masked_offset_mse` between the student's
    deformable-conv offsets and the teacher's (entries with ``|teacher offset| >= OFFSET_MASK``
    excluded, as the reference; cells of the zero padding excluded too);
  - ``loss_feature_distill`` (``FEATURE_WEIGHT`` > 0 only) = ``FEATURE_WEIGHT`` x :func:`feature_mse`
    between the backbone maps (stride 16, same width: same architecture);
  - ``teacher_obj_heatmap``, ``teacher_rel_heatmap``, ... (``LOG_TEACHER_LOSSES``): the teacher's
    own field losses on the batch, logged by the trainer as monitoring scalars (their names do not
    start with ``loss``, so they are never added to the loss).

  The teacher is a :class:`FrozenTeacher`: always in eval mode (its ``train()`` cannot switch it
  back, so BN running statistics never change), ``requires_grad`` False, run under
  ``torch.no_grad``. It is a plain attribute of the loss object, not a submodule of the student:
  outside DDP, outside the student's ``state_dict``, checkpoint and EMA. The student's offsets are
  read by a :class:`FieldTap` (a forward hook on ``model.net`` recording its last training output;
  the model is not changed), so the student needs no second forward.

Inference is RGB only: the student checkpoint is a plain one-stage model
(:func:`sgg.engine.methods.stdg.inference_config` turns depth loading off for it).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode as CN

from sgg.checkpoint import CheckpointError, Checkpointer, load_checkpoint_file, load_model_state, unwrap_model
from sgg.config import ConfigError

from .base import Distillation, Tap

logger = logging.getLogger(__name__)

__all__ = [
    "STDG_MODES",
    "DepthTeacherDistillation",
    "FieldTap",
    "FrozenTeacher",
    "build_depth_teacher",
    "feature_mse",
    "load_teacher_weights",
    "masked_offset_mse",
    "teacher_config",
    "valid_cell_mask",
    "validate_stdg_config",
]

#: values of MODEL.STDG.MODE: "" plain RGB training, "depth" stage 1, "combine" stage 2
STDG_MODES = ("", "depth", "combine")


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def validate_stdg_config(cfg: CN) -> None:
    """Cross-key checks of ``MODEL.STDG`` (raises :class:`~sgg.config.ConfigError` naming the keys)."""
    from sgg.data.depth_encoding import ENCODINGS

    s = cfg.MODEL.STDG
    if s.MODE not in STDG_MODES:
        raise ConfigError(f"MODEL.STDG.MODE must be one of {STDG_MODES}, got {s.MODE!r}")
    if not s.MODE:
        return
    if cfg.MODEL.META_ARCHITECTURE != "OneStageSGG":
        raise ConfigError(f"MODEL.STDG.MODE {s.MODE!r} trains the one-stage model: set MODEL.META_ARCHITECTURE "
                          f"\"OneStageSGG\" (got {cfg.MODEL.META_ARCHITECTURE!r})")
    if cfg.MODEL.HML.ENABLED:
        raise ConfigError("MODEL.STDG.MODE and MODEL.HML.ENABLED cannot be combined (HML is for the two-stage "
                          "relation head)")
    if not cfg.INPUT.LOAD_DEPTH or cfg.INPUT.DEPTH_ENCODING not in ENCODINGS:
        raise ConfigError(f"MODEL.STDG.MODE {s.MODE!r} needs the depth encoding: set INPUT.LOAD_DEPTH True and "
                          f"INPUT.DEPTH_ENCODING to one of {ENCODINGS} (got LOAD_DEPTH={cfg.INPUT.LOAD_DEPTH}, "
                          f"DEPTH_ENCODING={cfg.INPUT.DEPTH_ENCODING!r})")
    for key in ("DEPTH_PIXEL_MEAN", "DEPTH_PIXEL_STD"):
        if len(s[key]) != 3:
            raise ConfigError(f"MODEL.STDG.{key} needs 3 values (one per encoding channel), got {list(s[key])}")
    if min(s.DEPTH_PIXEL_STD) <= 0:
        raise ConfigError(f"MODEL.STDG.DEPTH_PIXEL_STD must be > 0, got {list(s.DEPTH_PIXEL_STD)}")
    if s.MODE != "combine":
        return
    if not s.TEACHER_WEIGHTS:
        raise ConfigError("MODEL.STDG.MODE \"combine\" needs the stage-1 depth model: train it with the *_depth "
                          "config (MODEL.STDG.MODE \"depth\") and set MODEL.STDG.TEACHER_WEIGHTS to its "
                          "OUTPUT_DIR or checkpoint file")
    if s.OFFSET_WEIGHT < 0 or s.FEATURE_WEIGHT < 0:
        raise ConfigError(f"MODEL.STDG.OFFSET_WEIGHT and FEATURE_WEIGHT must be >= 0, got {s.OFFSET_WEIGHT} and "
                          f"{s.FEATURE_WEIGHT}")
    if s.OFFSET_WEIGHT == 0 and s.FEATURE_WEIGHT == 0:
        raise ConfigError("MODEL.STDG.OFFSET_WEIGHT and FEATURE_WEIGHT are both 0: the teacher would teach "
                          "nothing (use MODEL.STDG.MODE \"\" for a plain RGB run)")
    if s.OFFSET_MASK <= 0:
        raise ConfigError(f"MODEL.STDG.OFFSET_MASK must be > 0, got {s.OFFSET_MASK}")
    o = cfg.MODEL.ONESTAGE
    if s.OFFSET_WEIGHT > 0 and "deform" not in (o.OBJ_TRUNK, o.REL_TRUNK):
        raise ConfigError(f"MODEL.STDG.MODE \"combine\" distils deformable-conv offsets, but neither "
                          f"MODEL.ONESTAGE.OBJ_TRUNK ({o.OBJ_TRUNK!r}) nor MODEL.ONESTAGE.REL_TRUNK "
                          f"({o.REL_TRUNK!r}) is \"deform\": set one (the teacher's config must match) or "
                          f"MODEL.STDG.OFFSET_WEIGHT 0 with FEATURE_WEIGHT > 0")


def teacher_config(cfg: CN) -> CN:
    """The teacher's config: ``cfg`` with ``MODEL.STDG.MODE "depth"`` (the model reads the depth
    encoding) and no backbone weight file (the teacher checkpoint replaces every weight)."""
    t = cfg.clone()
    t.defrost()
    t.MODEL.STDG.MODE = "depth"
    t.MODEL.ONESTAGE.BACKBONE_WEIGHTS = ""
    t.freeze()
    return t


# ---------------------------------------------------------------------------------------------
# The frozen teacher
# ---------------------------------------------------------------------------------------------
class FrozenTeacher(nn.Module):
    """A :class:`~sgg.modeling.meta_arch.one_stage.OneStageSGG` frozen for distillation.

    Always in eval mode (``train(True)`` is ignored and every forward re-asserts eval on the inner
    model, so BN running statistics never update), ``requires_grad`` False, forward under
    ``torch.no_grad``.

    ``forward(batched_inputs) -> (fields, sizes)``: the network's field dict
    (:class:`~sgg.modeling.onestage.fields.CompositeFieldNet`: ``obj_logits [B, C, Hg, Wg]``, ...,
    ``offsets`` list of ``[B, 18, Hg, Wg]``, ``features [B, Cf, Hg, Wg]``) on the inputs'
    ``d[model.input_key]`` (``"depth"`` for the depth teacher), and the unpadded ``(h, w)`` of each.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = unwrap_model(model)
        self.model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    @torch.no_grad()
    def forward(self, batched_inputs: Sequence[dict]) -> Tuple[Dict[str, Any], List[Tuple[int, int]]]:
        self.model.eval()
        images, sizes = self.model.preprocess(self.model.input_tensors(batched_inputs))
        return self.model.net(images), sizes

    @torch.no_grad()
    def field_losses(self, batched_inputs: Sequence[dict],
                     fields: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The teacher's own six field losses on the batch's GT (``loss_obj_heatmap``, ...)."""
        targets = self.model.encode(batched_inputs, tuple(fields["obj_logits"].shape[-2:]))
        return self.model.losses(fields, targets)


def load_teacher_weights(model: nn.Module, path: str, key: str = "MODEL.STDG.TEACHER_WEIGHTS") -> str:
    """Load a stage-1 checkpoint (file, or a directory -> its ``last_checkpoint``) into ``model``,
    its EMA weights when present. Every tensor must match: a missing or extra key means another
    architecture, and is an error naming the file and ``key``. Returns the resolved path."""
    if not path:
        raise FileNotFoundError(f"{key} is empty: set it to the stage-1 (MODEL.STDG.MODE \"depth\") run's "
                                f"OUTPUT_DIR or checkpoint file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key} = '{path}' does not exist: train the depth model first (MODEL.STDG.MODE "
                                f"\"depth\", e.g. configs/onestage/stdg_*_depth.yaml) and point {key} at its "
                                f"OUTPUT_DIR or checkpoint")
    path = Checkpointer(model).resolve(path)
    ckpt = load_checkpoint_file(path)
    if "model" not in ckpt:
        raise CheckpointError(f"teacher checkpoint {path} ({key}) has no 'model' entry (keys: {sorted(ckpt)})")
    _check_teacher_mode(ckpt.get("config"), path, key)
    weights = ckpt["model"]
    ema = ckpt.get("ema")
    if isinstance(ema, Mapping) and "model" in ema:
        logger.info("depth teacher: the EMA weights of %s (%d updates)", path, int(ema.get("updates", 0)))
        weights = ema["model"]
    missing, unexpected = load_model_state(model, weights, source=path)
    if missing or unexpected:
        raise CheckpointError(
            f"teacher checkpoint {path} ({key}) does not fit the teacher built from this config: "
            f"{len(missing)} missing keys (first: {missing[:3]}), {len(unexpected)} unexpected keys (first: "
            f"{unexpected[:3]}). The teacher has the student's MODEL.ONESTAGE architecture: train the stage-1 "
            f"model with the same MODEL.ONESTAGE settings")
    return path


def _check_teacher_mode(config_yaml: Any, path: str, key: str) -> None:
    """The checkpoint's own config, when stored, must be a depth-mode run."""
    if not isinstance(config_yaml, str):
        return
    try:
        import yaml

        mode = ((yaml.safe_load(config_yaml) or {}).get("MODEL", {}).get("STDG", {}) or {}).get("MODE")
    except Exception:  # noqa: BLE001 - an unreadable stored config is not the teacher's problem
        return
    if mode is not None and mode != "depth":
        raise CheckpointError(f"teacher checkpoint {path} ({key}) was trained with MODEL.STDG.MODE {mode!r}, not "
                              f"\"depth\": the teacher must be the stage-1 depth model")


def build_depth_teacher(cfg: CN, num_obj_classes: int, num_rel_classes: int, weights: Optional[str] = None,
                        device: Optional[torch.device] = None) -> FrozenTeacher:
    """The frozen depth teacher of ``cfg``: the one-stage model of :func:`teacher_config` (class
    counts WITH background, as :func:`~sgg.modeling.meta_arch.build_sgg_model`) with the weights of
    ``weights`` (default ``MODEL.STDG.TEACHER_WEIGHTS``), on ``device`` (default MODEL.DEVICE)."""
    from sgg.utils.device import resolve_device
    from sgg.modeling.meta_arch import build_sgg_model

    tcfg = teacher_config(cfg)
    model = build_sgg_model(tcfg, None, num_obj_classes, num_rel_classes)
    path = load_teacher_weights(model, weights if weights is not None else cfg.MODEL.STDG.TEACHER_WEIGHTS)
    logger.info("depth teacher loaded from %s (%d parameters, frozen)", path,
                sum(p.numel() for p in model.parameters()))
    return FrozenTeacher(model).to(device if device is not None else resolve_device(cfg.MODEL.DEVICE))


# ---------------------------------------------------------------------------------------------
# The student's fields
# ---------------------------------------------------------------------------------------------
class FieldTap(Tap):
    """A forward hook on a field network (``OneStageSGG.net``) that keeps its latest TRAINING output
    (the dict of :class:`~sgg.modeling.onestage.fields.CompositeFieldNet`, graph attached) until
    :meth:`pop`. Eval forwards (validation, an EMA copy) are not recorded. Nothing in the network
    changes."""

    record: Optional[Dict[str, Any]]

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self._handles = [net.register_forward_hook(self._hook)]

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:  # noqa: ARG002
        if module.training:
            self.record = output


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def valid_cell_mask(sizes: Sequence[Tuple[int, int]], grid: Tuple[int, int], stride: int,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """bool ``[B, 1, Hg, Wg]``: cell ``(i, j)`` of image ``b`` overlaps its unpadded ``(h, w)``
    (``i < ceil(h / stride)`` and ``j < ceil(w / stride)``); the rest is the batch's zero padding."""
    hg, wg = int(grid[0]), int(grid[1])
    rows = torch.tensor([math.ceil(h / stride) for h, _ in sizes], device=device)
    cols = torch.tensor([math.ceil(w / stride) for _, w in sizes], device=device)
    i = torch.arange(hg, device=device)
    j = torch.arange(wg, device=device)
    mask = (i[None, :, None] < rows[:, None, None]) & (j[None, None, :] < cols[:, None, None])
    return mask[:, None]


def masked_offset_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], mask: float = 10.0,
                      valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference between deformable offsets over the kept entries.

    Args:
        student, teacher: per deformable layer ``[B, 18, Hg, Wg]`` (same layers, same order).
        mask: entries where ``|teacher| >= mask`` are left out (the reference's rule: a teacher
            offset that large points outside any sensible neighbourhood).
        valid: optional bool ``[B, 1, Hg, Wg]`` of the cells to use (:func:`valid_cell_mask`).

    Returns a float32 scalar: ``sum((s - t)^2 over kept) / number kept`` (0, still attached to the
    student's graph, when nothing is kept). The teacher side is detached.
    """
    if len(student) != len(teacher):
        raise ValueError(f"the student has {len(student)} deformable layers, the teacher {len(teacher)}: the two "
                         f"models must share MODEL.ONESTAGE.OBJ_TRUNK / REL_TRUNK / HEAD_CONVS")
    if not student:
        raise ValueError("no deformable offsets to distil: set MODEL.ONESTAGE.OBJ_TRUNK or REL_TRUNK \"deform\"")
    total = student[0].new_zeros((), dtype=torch.float32)
    count = student[0].new_zeros((), dtype=torch.float32)
    for k, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(f"deformable layer {k}: student offsets {tuple(s.shape)} vs teacher {tuple(t.shape)}")
        t = t.detach().float()
        keep = t.abs() < mask
        if valid is not None:
            keep = keep & valid
        total = total + torch.where(keep, (s.float() - t) ** 2, torch.zeros_like(t)).sum()
        count = count + keep.sum()
    return total / count.clamp(min=1.0)


def feature_mse(student: torch.Tensor, teacher: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference between two backbone maps ``[B, C, Hg, Wg]`` over the channels of
    the ``valid`` cells (bool ``[B, 1, Hg, Wg]``, default all); float32 scalar, teacher detached."""
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} vs teacher {tuple(teacher.shape)}: feature "
                         f"distillation needs the same backbone")
    diff = (student.float() - teacher.detach().float()) ** 2
    if valid is None:
        return diff.mean()
    keep = valid.expand_as(diff)
    return torch.where(keep, diff, torch.zeros_like(diff)).sum() / keep.sum().clamp(min=1).float()


class DepthTeacherDistillation(Distillation):
    """STDG stage 2 as a trainer ``extra_losses`` callable ``fn(model, batch, outputs)`` (module
    docstring).

    Args:
        teacher: the frozen depth model (:class:`FrozenTeacher`, or a one-stage model to freeze).
        offset_weight: MODEL.STDG.OFFSET_WEIGHT (0: no offset term).
        offset_mask: MODEL.STDG.OFFSET_MASK.
        feature_weight: MODEL.STDG.FEATURE_WEIGHT (0: no feature term).
        log_teacher_losses: return the teacher's field losses as ``teacher_*`` scalars (logged,
            never summed into the loss).

    :meth:`attach` the student (``OneStageSGG``) before training; ``__call__`` returns
    ``{"loss_offset_distill"?, "loss_feature_distill"?, "teacher_obj_heatmap"?, ...}``. The
    batch must hold the depth encoding (``INPUT.LOAD_DEPTH`` + ``INPUT.DEPTH_ENCODING``).
    """

    tapped = "the student"
    tap: Optional[FieldTap]

    def __init__(self, teacher: nn.Module, offset_weight: float = 1.0, offset_mask: float = 10.0,
                 feature_weight: float = 0.0, log_teacher_losses: bool = True) -> None:
        super().__init__()
        self.teacher = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)
        if getattr(self.teacher.model, "input_key", "depth") != "depth":
            logger.warning("the teacher reads %r, not the depth encoding", self.teacher.model.input_key)
        self.offset_weight = float(offset_weight)
        self.offset_mask = float(offset_mask)
        self.feature_weight = float(feature_weight)
        self.log_teacher_losses = bool(log_teacher_losses)

    @classmethod
    def from_config(cls, cfg: CN, model: nn.Module, num_obj_classes: int, num_rel_classes: int, *,
                    teacher: Optional[nn.Module] = None, attach: bool = True) -> "DepthTeacherDistillation":
        """Validate ``MODEL.STDG``, build the teacher (:func:`build_depth_teacher`, on the student's
        device; or take ``teacher``) and :meth:`attach` ``model`` unless ``attach`` is False (attach
        after building the trainer to keep the tap out of its EMA copy; harmless either way: the tap
        never records eval forwards). Class counts include background."""
        validate_stdg_config(cfg)
        s = cfg.MODEL.STDG
        if s.MODE != "combine":
            raise ConfigError(f"DepthTeacherDistillation is stage 2: MODEL.STDG.MODE must be \"combine\", "
                              f"got {s.MODE!r}")
        student = unwrap_model(model)
        device = next(student.parameters()).device
        if teacher is None:
            teacher = build_depth_teacher(cfg, num_obj_classes, num_rel_classes, device=device)
        out = cls(teacher.to(device), offset_weight=s.OFFSET_WEIGHT, offset_mask=s.OFFSET_MASK,
                  feature_weight=s.FEATURE_WEIGHT, log_teacher_losses=s.LOG_TEACHER_LOSSES)
        if attach:
            out.attach(model)
        return out

    def make_tap(self, model: nn.Module) -> FieldTap:
        """Tap the student's field network (``model.net``) to read its offsets / features
        (:meth:`attach` calls it; :meth:`detach` removes the tap)."""
        student = unwrap_model(model)
        if not hasattr(student, "net"):
            raise TypeError(f"the depth teacher distils into a one-stage model (OneStageSGG), "
                            f"got {type(student).__name__}")
        if student is self.teacher.model:
            raise ValueError("the student is the teacher itself")
        return FieldTap(student.net)

    def __call__(self, model: nn.Module, batch: Sequence[dict], outputs: Any = None) -> Dict[str, torch.Tensor]:
        if self.require_tap().net is not getattr(unwrap_model(model), "net", None):
            raise RuntimeError("DepthTeacherDistillation is attached to another model than the one trained")
        fields = self.pop_record()
        t_fields, sizes = self.teacher(batch)
        grid = tuple(fields["obj_logits"].shape[-2:])
        if tuple(t_fields["obj_logits"].shape[-2:]) != grid:
            raise ValueError(f"student grid {grid} vs teacher grid {tuple(t_fields['obj_logits'].shape[-2:])}: the "
                             f"depth encoding must have the image's size (INPUT.DEPTH_ENCODING)")
        stride = int(getattr(self.teacher.model, "stride", 16))
        valid = valid_cell_mask(sizes, grid, stride, device=fields["obj_logits"].device)
        out: Dict[str, torch.Tensor] = {}
        if self.offset_weight > 0:
            out["loss_offset_distill"] = self.offset_weight * masked_offset_mse(
                fields["offsets"], t_fields["offsets"], self.offset_mask, valid)
        if self.feature_weight > 0:
            out["loss_feature_distill"] = self.feature_weight * feature_mse(
                fields["features"], t_fields["features"], valid)
        if self.log_teacher_losses:
            for k, v in self.teacher.field_losses(batch, t_fields).items():
                name = k[len("loss_"):] if k.startswith("loss_") else k
                out["teacher_" + name] = v.detach()
        return out
