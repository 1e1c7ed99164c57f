"""HML: Hierarchical Memory Learning (Deng et al., ECCV 2022), see ``specs/hml.md``.

Stage 1 trains the relation head on the coarse predicates (fine-labelled pairs are ignored by the
loss, not turned into background). After it, the diagonal empirical Fisher ``F`` of the
relation-predictor parameters is estimated at the stage-1 weights ``θ*`` and saved with them.
Stage 2 trains on all predicates with a class-balanced cross-entropy, plus two memory terms:

* ``loss_anchor`` (model reconstruction): ``λ · mean(w ⊙ (θ* − θ)²)`` (``l2``) or
  ``λ · mean(w ⊙ |θ* − θ|)`` (``l1``), ``w = sigmoid(log10 F − mean(log10 F))``;
* ``loss_distill`` (concept reconstruction): ``KL(parent ‖ child) · T²`` on temperature-softened
  predictions over the stage-1 classes (coarse + background), the frozen stage-1 relation head
  (the "parent") scoring the SAME pairs the child sampled.

Library pieces (each usable alone, plain arguments, no cfg inside):

* :class:`~sgg.distill.hierarchy.PredicateHierarchy` (coarse/fine split, stage-1 targets);
* :func:`class_balanced_weights` (Cui et al. 2019), :class:`HMLRelationLoss` (the head's loss with
  a stage-1 target map and/or class weights);
* :func:`hml_anchor_params`, :func:`estimate_fisher`, :func:`fisher_weights`,
  :class:`ParameterAnchoring`;
* :class:`PredictionDistillation`, :func:`parent_logits_on_pairs`, :class:`RelationHeadTap`;
* :func:`save_stage1` / :func:`load_stage1` (one file, any rank count);
* :class:`HMLLoss` (the trainer's ``extra_losses`` callable for stage 2) and the config glue
  (:func:`build_hierarchy`, :func:`stage_config`, ...).

Typical wiring (``sgg/engine/relation.py``)::

    hier = build_hierarchy(cfg, stats)
    # stage 1
    configure_stage1(model, hier)                       # head loss: fine pairs ignored
    Trainer.from_config(stage_config(cfg, 1), model, loader).train()
    params = hml_anchor_params(model)
    fisher = estimate_fisher(model, params, batches, alpha=cfg.SOLVER.ALPHA_FOR_FISHER,
                             num_batches=cfg.MODEL.HML.FISHER_BATCHES)
    save_stage1(stage1_dir(cfg), snapshot(params), fisher, hier, relation_head_state(model))
    # stage 2
    st = load_stage1(stage1_dir(cfg))
    hml_loss = HMLLoss.from_config(cfg, model, st, stats["predicate_counts"])   # attaches itself
    Trainer.from_config(stage_config(cfg, 2), model, loader, extra_losses=[hml_loss]).train()
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from sgg.checkpoint import unwrap_model
from sgg.utils.io import atomic_torch_save
from sgg.config import ConfigError
from sgg.modeling.relation.head import RelationHead
from sgg.modeling.relation.loss import RelationLoss
from sgg.utils import comm

from .hierarchy import IGNORE_INDEX, PredicateHierarchy

logger = logging.getLogger(__name__)

__all__ = [
    "HMLLoss",
    "HMLRelationLoss",
    "ParameterAnchoring",
    "PredictionDistillation",
    "RelationHeadTap",
    "STAGE1_FILE",
    "Stage1State",
    "all_reduce_mean",
    "build_hierarchy",
    "build_parent_head",
    "class_balanced_weights",
    "configure_stage1",
    "confidence_from_metrics",
    "estimate_fisher",
    "find_relation_head",
    "fisher_weights",
    "hml_anchor_params",
    "init_from_stage1",
    "load_stage1",
    "parent_logits_on_pairs",
    "relation_head_state",
    "save_stage1",
    "snapshot",
    "stage1_dir",
    "stage1_file",
    "stage_config",
    "stage_iterations",
    "training_loss",
    "validate_hml_config",
]

#: File name of the stage-1 memory (θ*, F, hierarchy, parent weights) inside the stage-1 folder.
STAGE1_FILE = "hml_stage1.pth"
_FORMAT = "sgg-hml-stage1"
_VERSION = 1
_DISTILL_TYPES = ("l2", "l1")


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def validate_hml_config(cfg: CN) -> None:
    """Cross-key checks of the HML keys (raises :class:`~sgg.config.ConfigError`)."""
    h = cfg.MODEL.HML
    if cfg.SOLVER.DISTILL_TYPE not in _DISTILL_TYPES:
        raise ConfigError(f"SOLVER.DISTILL_TYPE must be one of {_DISTILL_TYPES}, got {cfg.SOLVER.DISTILL_TYPE!r}")
    if h.STAGE not in (0, 1, 2):
        raise ConfigError(f"MODEL.HML.STAGE must be 0 (both), 1 or 2, got {h.STAGE}")
    if not 0.0 < h.STAGE1_ITER_FRACTION < 1.0:
        raise ConfigError(f"MODEL.HML.STAGE1_ITER_FRACTION must be in (0, 1), got {h.STAGE1_ITER_FRACTION}")
    if not 0.0 <= cfg.SOLVER.ALPHA_FOR_FISHER <= 1.0:
        raise ConfigError(f"SOLVER.ALPHA_FOR_FISHER must be in [0, 1], got {cfg.SOLVER.ALPHA_FOR_FISHER}")
    if not 0.0 <= h.CLASS_BALANCE_BETA < 1.0:
        raise ConfigError(f"MODEL.HML.CLASS_BALANCE_BETA must be in [0, 1), got {h.CLASS_BALANCE_BETA}")
    if cfg.MODEL.DISTILL_TEMPERATURE <= 0:
        raise ConfigError(f"MODEL.DISTILL_TEMPERATURE must be > 0, got {cfg.MODEL.DISTILL_TEMPERATURE}")
    if h.FISHER_BATCHES < 1:
        raise ConfigError(f"MODEL.HML.FISHER_BATCHES must be >= 1, got {h.FISHER_BATCHES}")
    if h.NUM_COARSE < 1:
        raise ConfigError(f"MODEL.HML.NUM_COARSE must be >= 1, got {h.NUM_COARSE}")
    if cfg.SOLVER.LAMBDA_FOR_PARAM < 0 or h.DISTILL_WEIGHT < 0:
        raise ConfigError("SOLVER.LAMBDA_FOR_PARAM and MODEL.HML.DISTILL_WEIGHT must be >= 0")


def stage1_dir(cfg: CN) -> str:
    """Folder of stage 1's checkpoints and stage file: MODEL.HML.STAGE1_DIR or OUTPUT_DIR/stage1."""
    return cfg.MODEL.HML.STAGE1_DIR or os.path.join(cfg.OUTPUT_DIR, "stage1")


def stage1_file(directory: str) -> str:
    return directory if directory.endswith(".pth") else os.path.join(directory, STAGE1_FILE)


def stage_iterations(cfg: CN) -> Tuple[int, int]:
    """(stage-1 iterations, stage-2 iterations) of this command: STAGE 0 splits SOLVER.MAX_ITER
    by STAGE1_ITER_FRACTION (each stage >= 1 iteration); STAGE 1 / 2 give it all to that stage."""
    n = int(cfg.SOLVER.MAX_ITER)
    stage = int(cfg.MODEL.HML.STAGE)
    if stage == 1:
        return n, 0
    if stage == 2:
        return 0, n
    if n < 2:
        raise ConfigError("MODEL.HML.STAGE 0 needs SOLVER.MAX_ITER >= 2 (one iteration per stage at least)")
    n1 = min(max(int(round(n * float(cfg.MODEL.HML.STAGE1_ITER_FRACTION))), 1), n - 1)
    return n1, n - n1


def stage_config(cfg: CN, stage: int) -> CN:
    """A frozen copy of ``cfg`` for one stage's trainer: SOLVER.MAX_ITER = the stage's iterations
    (:func:`stage_iterations`) and OUTPUT_DIR = :func:`stage1_dir` for stage 1 (stage 2 keeps
    OUTPUT_DIR), so each stage checkpoints and resumes in its own folder."""
    n1, n2 = stage_iterations(cfg)
    out = cfg.clone()
    out.defrost()
    if stage == 1:
        out.SOLVER.MAX_ITER = n1
        out.OUTPUT_DIR = stage1_dir(cfg)
    elif stage == 2:
        out.SOLVER.MAX_ITER = n2
    else:
        raise ValueError(f"HML stages are 1 and 2, got {stage}")
    out.freeze()
    return out


def build_hierarchy(cfg: CN, statistics: Mapping[str, Any], dataset_dir: Optional[str] = None) -> PredicateHierarchy:
    """The hierarchy of MODEL.HML.HIERARCHY from the train ``statistics`` (``predicate_counts``,
    ``rel_classes``; see :mod:`sgg.data.statistics`). ``dataset_dir`` (for "dataset") defaults to
    the folder of DATASETS.TRAIN[0]."""
    spec = cfg.MODEL.HML.HIERARCHY
    names = statistics.get("rel_classes")
    if spec == "frequency":
        hier = PredicateHierarchy.from_frequency(statistics["predicate_counts"], cfg.MODEL.HML.NUM_COARSE, names)
    elif spec == "dataset":
        if dataset_dir is None:
            from sgg.data.catalog import get_dataset_files

            dataset_dir = get_dataset_files(cfg.DATASETS.TRAIN[0], cfg.DATASETS.DATA_DIR).root
        hier = PredicateHierarchy.from_dataset_dir(dataset_dir, names)
    else:
        hier = PredicateHierarchy.from_file(spec, names)
    logger.info("HML predicate hierarchy (%s): %d coarse %s, %d fine", spec, len(hier.coarse_ids),
                hier.coarse_names, len(hier.fine_ids))
    return hier


# ---------------------------------------------------------------------------------------------
# Class-balanced weights and the head's loss
# ---------------------------------------------------------------------------------------------
def class_balanced_weights(counts: Union[Sequence[float], np.ndarray, torch.Tensor], beta: float,
                           background_count: Optional[float] = None) -> torch.Tensor:
    """Class-balanced weights (Cui et al., CVPR 2019): ``w_c ∝ 1 / E_c`` with the effective number
    of samples ``E_c = (1 - β^{n_c}) / (1 - β)``, normalised so that ``sum(w) = P + 1`` (the
    number of classes, as in the paper).

    Args:
        counts: ``[P+1]`` samples per class; index 0 is background (``statistics
            ["predicate_counts"]`` holds 0 there).
        beta: β in [0, 1) (0: all weights 1; β → 1: inverse frequency).
        background_count: overrides ``counts[0]``.

    Background: when its count is unknown (<= 0), it is treated as a class with unboundedly many
    samples, ``E_0 = 1 / (1 - β)`` (the limit of ``E`` for ``n → ∞``; there are always more
    background pairs than pairs of any predicate), i.e. it gets the weight of the most frequent
    (saturated) predicates. A foreground class with 0 samples counts as 1 sample (it is never a
    target, so its weight only enters the normalisation).

    Returns float32 ``[P+1]``.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = torch.as_tensor(np.asarray(torch.as_tensor(counts).cpu().numpy(), dtype=np.float64)).reshape(-1).clone()
    if background_count is not None:
        n[0] = float(background_count)
    eff = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n.clamp(min=1.0))) / (1.0 - beta)
    if n[0] <= 0:
        eff[0] = 1.0 / (1.0 - beta)
    w = 1.0 / eff
    w = w / w.sum() * n.numel()
    return w.float()


class HMLRelationLoss(RelationLoss):
    """The relation head's loss for the HML stages (drop-in for :class:`RelationLoss`).

    ``loss_rel``: cross-entropy of the predicate logits, where the labels first go through
    ``target_map`` (int64 ``[P+1]``, e.g. :meth:`PredicateHierarchy.stage1_target_map`: fine ->
    :data:`IGNORE_INDEX`, stage 1) and rows are weighted by ``class_weights`` (float ``[P+1]``, e.g.
    :func:`class_balanced_weights`, stage 2). The reduction is PyTorch's: the weighted mean
    ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over the non-ignored rows (so the loss scale matches the
    unweighted loss while rare classes count more); a batch whose rows are all ignored gives a 0
    that keeps the graph. ``loss_refine_obj`` is :class:`RelationLoss`'s, unchanged.

    The weights and map are non-persistent buffers: checkpoints of the model stay loadable
    without HML.
    """

    def __init__(self, label_smoothing: float = 0.0, refine_obj: bool = True,
                 class_weights: Optional[torch.Tensor] = None, target_map: Optional[torch.Tensor] = None) -> None:
        super().__init__(label_smoothing=label_smoothing, refine_obj=refine_obj)
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("target_map", None if target_map is None
                             else torch.as_tensor(target_map, dtype=torch.long).clone(), persistent=False)

    @classmethod
    def like(cls, loss: nn.Module, **kwargs: Any) -> "HMLRelationLoss":
        """Same label smoothing / refine_obj as an existing head loss."""
        return cls(label_smoothing=getattr(loss, "label_smoothing", 0.0), refine_obj=getattr(loss, "refine_obj", True),
                   **kwargs)

    def rel_targets(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        if self.target_map is None:
            return labels
        m = self.target_map.to(labels.device)
        return torch.where(labels >= 0, m[labels.clamp(min=0)], labels)

    def rel_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` ``[M, P+1]``, ``labels`` ``[M]`` (0..P) -> scalar."""
        targets = self.rel_targets(labels.to(logits.device))
        if logits.shape[0] == 0 or not bool((targets != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        w = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(logits.float(), targets, weight=w, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)


def find_relation_head(model: nn.Module) -> Tuple[str, RelationHead]:
    """``(module path, head)`` of the :class:`RelationHead` inside ``model`` (DDP unwrapped; the path
    is "" when ``model`` is the head)."""
    model = unwrap_model(model)
    for name, m in model.named_modules():
        if isinstance(m, RelationHead):
            return name, m
    raise ValueError(f"{type(model).__name__} contains no RelationHead (HML works on two-stage relation models)")


def configure_stage1(model: nn.Module, hierarchy: PredicateHierarchy) -> HMLRelationLoss:
    """Make the model's relation head train stage 1: its loss ignores fine-labelled pairs. Call
    before building the trainer (the loss module is part of the model)."""
    _, head = find_relation_head(model)
    head.loss_evaluator = HMLRelationLoss.like(head.loss_evaluator, target_map=hierarchy.stage1_target_map())
    return head.loss_evaluator


# ---------------------------------------------------------------------------------------------
# Parameters, Fisher, anchoring
# ---------------------------------------------------------------------------------------------
def hml_anchor_params(model: nn.Module, exclude: Sequence[str] = ("freq_bias",)) -> Dict[str, nn.Parameter]:
    """The parameters HML anchors: every trainable parameter of the relation head's predictor
    (Motifs: context layers, post_emb, post_cat, rel_compress, up_dim; any registered predictor:
    all of its parameters) except those whose name contains a string of ``exclude`` (default the
    frequency bias). The head's feature extractors (object / union box heads) are outside the
    predictor, so never included; neither are frozen parameters.

    Returns ``{name in model.named_parameters(): parameter}`` in registration order.
    """
    model = unwrap_model(model)
    path, head = find_relation_head(model)
    prefix = (path + "." if path else "") + "predictor."
    out: Dict[str, nn.Parameter] = {}
    for n, p in head.predictor.named_parameters():
        if not p.requires_grad or any(e in n for e in exclude):
            continue
        out[prefix + n] = p
    if not out:
        raise ValueError("the relation predictor has no trainable parameters to anchor")
    return out


def snapshot(params: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached CPU float32 copies (θ*)."""
    return {n: p.detach().to("cpu", torch.float32).clone() for n, p in params.items()}


def relation_head_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The relation head's state dict on CPU (the parent's weights; the detector is shared and
    frozen, so it is not part of the memory)."""
    _, head = find_relation_head(model)
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over the ranks (identity in one process), same shape and dtype.
    Collective: every rank must call it with a tensor of the same shape."""
    if comm.get_world_size() == 1:
        return tensor
    out = comm.reduce_dict({"t": tensor}, average=True)["t"]
    return out.to(tensor.dtype).reshape(tensor.shape)


def training_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Default Fisher loss: the sum of the ``loss*`` terms the model returns in training mode on
    ``batch`` (moved to the model's device), i.e. the stage's training objective."""
    from sgg.utils.device import move_to_device

    p = next(model.parameters())
    out = model(move_to_device(batch, p.device))
    terms = [v.float().reshape(()) for k, v in out.items() if k.startswith("loss")]
    if not terms:
        raise ValueError(f"the model returned no 'loss*' terms (keys: {sorted(out)})")
    return torch.stack(terms).sum()


def estimate_fisher(model: nn.Module, params: Mapping[str, torch.Tensor], batches: Iterable[Any],
                    loss_fn: Callable[[nn.Module, Any], torch.Tensor] = training_loss, alpha: float = 0.5,
                    num_batches: Optional[int] = None, clamp: Tuple[float, float] = (1e-20, 1.0),
                    progress: bool = False) -> Dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of ``params`` at their current values.

    For each batch: ``g = ∂ loss_fn(model, batch) / ∂θ`` (the batch's loss, model in training mode
    as when it was trained; ``.grad`` fields are not touched), ``s = g²`` averaged over the ranks
    (:func:`all_reduce_mean`), non-finite entries set to 0, clamped to ``clamp`` = [1e-20, 1]
    (as the released code did per batch); then the EMA ``F = alpha * s + (1 - alpha) * F`` with
    ``F = s`` after the first batch. Since every ``s`` lies in ``clamp``, so does ``F``.

    Unlike the released code, which accumulated ``F`` during training (and only on iterations where
    the loss fell), ``F`` is measured at the final stage-1 weights θ*, on ``num_batches`` batches
    (every rank must run the same number: the reduction is per batch). A parameter no batch reaches
    gets ``F = 1e-20`` (the lower clamp). Pass the unwrapped model (not DDP): ranks meet only in
    the per-batch reduction. Buffers (BatchNorm statistics) are restored afterwards.

    Returns ``{name: float32 tensor shaped like the parameter}`` on the parameters' device.
    """
    if not params:
        raise ValueError("estimate_fisher needs at least one parameter")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    names = list(params)
    tensors = [params[n] for n in names]
    sizes = [t.numel() for t in tensors]
    lo, hi = float(clamp[0]), float(clamp[1])
    fisher: Optional[torch.Tensor] = None
    was_training = model.training
    # train mode would move BatchNorm running statistics: the model leaves as it came in
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    model.train()
    it = iter(batches)
    count = 0
    bar = None
    if progress and comm.is_main_process() and num_batches:
        from tqdm import tqdm

        bar = tqdm(total=num_batches, desc="HML Fisher", mininterval=2.0)
    try:
        while num_batches is None or count < num_batches:
            try:
                batch = next(it)
            except StopIteration:
                break
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            sq = torch.cat([(g.detach().float() ** 2).reshape(-1) if g is not None
                            else t.new_zeros(t.numel(), dtype=torch.float32)
                            for g, t in zip(grads, tensors)])
            sq = all_reduce_mean(sq)
            sq = torch.nan_to_num(sq, nan=0.0, posinf=hi, neginf=0.0).clamp_(lo, hi)
            fisher = sq if fisher is None else alpha * sq + (1.0 - alpha) * fisher
            count += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
    if fisher is None:
        raise ValueError("estimate_fisher got no batches")
    if num_batches is not None and count < num_batches:
        logger.warning("Fisher estimated on %d batches (%d asked): the batch iterable ran out", count, num_batches)
    fisher = fisher.clamp_(lo, hi)
    return {n: f.reshape(t.shape) for n, f, t in zip(names, fisher.split(sizes), tensors)}


def fisher_weights(fisher: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Anchoring weights ``w = sigmoid(log10 F - mean(log10 F))``.

    The mean is taken over ALL entries of ALL tensors together (one scalar, as the released code
    did on its single flattened vector), so the weights compare parameters across layers: an
    entry whose Fisher is at the geometric mean of all entries gets 0.5. Float32, same keys and
    shapes.
    """
    logs = {n: torch.log10(f.double().clamp(min=1e-45)) for n, f in fisher.items()}
    total = sum(v.numel() for v in logs.values())
    if total == 0:
        raise ValueError("fisher_weights got no entries")
    mean = sum(v.sum() for v in logs.values()) / total
    return {n: torch.sigmoid(v - mean).float() for n, v in logs.items()}


class ParameterAnchoring:
    """Model reconstruction: ``lam * mean(w ⊙ (θ* − θ)²)`` (``kind="l2"``) or
    ``lam * mean(w ⊙ |θ* − θ|)`` (``"l1"``), the mean over all anchored entries of all tensors.

    Args:
        theta_star: ``{parameter name: tensor}`` (names of ``model.named_parameters()``).
        weights: same keys and shapes (e.g. :func:`fisher_weights`); None = all 1.
        lam: λ (SOLVER.LAMBDA_FOR_PARAM). kind: SOLVER.DISTILL_TYPE.

    Call with the model (parameters looked up by name, DDP unwrapped) or with a
    ``{name: parameter}`` mapping. Gradient: ``lam * 2 w (θ − θ*) / n`` (l2),
    ``lam * w * sign(θ − θ*) / n`` (l1), ``n`` = number of anchored entries. Computed in float32.
    """

    def __init__(self, theta_star: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, torch.Tensor]] = None,
                 lam: float = 1.0, kind: str = "l2") -> None:
        if kind not in _DISTILL_TYPES:
            raise ValueError(f"kind (SOLVER.DISTILL_TYPE) must be one of {_DISTILL_TYPES}, got {kind!r}")
        if not theta_star:
            raise ValueError("ParameterAnchoring needs at least one anchored tensor")
        self.names = list(theta_star)
        self.theta_star = {n: theta_star[n].detach().float() for n in self.names}
        if weights is None:
            self.weights = {n: torch.ones_like(t) for n, t in self.theta_star.items()}
        else:
            missing = [n for n in self.names if n not in weights]
            if missing:
                raise KeyError(f"anchoring weights miss {missing[:5]}")
            self.weights = {n: weights[n].detach().float() for n in self.names}
            bad = [n for n in self.names if self.weights[n].shape != self.theta_star[n].shape]
            if bad:
                raise ValueError(f"anchoring weights and θ* differ in shape for {bad[:5]}")
        self.lam = float(lam)
        self.kind = kind
        self.numel = sum(t.numel() for t in self.theta_star.values())
        self._model_ref: Optional[int] = None
        self._params: Optional[List[torch.Tensor]] = None

    def to(self, device: Union[str, torch.device]) -> "ParameterAnchoring":
        self.theta_star = {n: t.to(device) for n, t in self.theta_star.items()}
        self.weights = {n: t.to(device) for n, t in self.weights.items()}
        return self

    def _resolve(self, model_or_params: Union[nn.Module, Mapping[str, torch.Tensor]]) -> List[torch.Tensor]:
        if isinstance(model_or_params, Mapping):
            src = model_or_params
        else:
            model = unwrap_model(model_or_params)
            if self._params is not None and self._model_ref == id(model):
                return self._params
            src = dict(model.named_parameters())
        missing = [n for n in self.names if n not in src]
        if missing:
            raise KeyError(f"the model has no parameters {missing[:5]} that θ* anchors "
                           f"({len(missing)} missing): was the stage-1 model a different predictor?")
        params = [src[n] for n in self.names]
        bad = [n for n, p in zip(self.names, params) if p.shape != self.theta_star[n].shape]
        if bad:
            raise ValueError(f"parameter shapes differ from θ* for {bad[:5]}")
        if not isinstance(model_or_params, Mapping):
            self._model_ref, self._params = id(unwrap_model(model_or_params)), params
        return params

    def __call__(self, model_or_params: Union[nn.Module, Mapping[str, torch.Tensor]]) -> torch.Tensor:
        params = self._resolve(model_or_params)
        dev = params[0].device
        if next(iter(self.theta_star.values())).device != dev:
            self.to(dev)
        total = params[0].new_zeros((), dtype=torch.float32)
        for n, p in zip(self.names, params):
            d = self.theta_star[n] - p.float()
            d = d * d if self.kind == "l2" else d.abs()
            total = total + (self.weights[n] * d).sum()
        return self.lam * total / self.numel


# ---------------------------------------------------------------------------------------------
# Prediction distillation
# ---------------------------------------------------------------------------------------------
class PredictionDistillation(nn.Module):
    """Concept reconstruction: ``T² · mean_rows sum_{c ∈ parent classes} c_w · p_c (log p_c − log q_c)``
    with ``p = softmax(parent_logits[:, classes] / T)``, ``q = softmax(child_logits[:, classes] / T)``,
    i.e. ``KL(parent ‖ child) · T²`` over the classes the parent was trained on (stage-1 coarse
    predicates + background); the other columns play no part.

    Args:
        temperature: T (MODEL.DISTILL_TEMPERATURE).
        use_confidence: weight class ``c``'s term by ``confidence[c]`` (MODEL.USE_CONFIDENCE).
        confidence: float ``[P+1]`` indexed by predicate id, the parent's per-predicate recall on
            validation (:func:`confidence_from_metrics`; background 1.0).
        parent_classes: int class indices (e.g. ``hierarchy.stage_classes(1)``); None = all.

    ``forward(child_logits, parent_logits)``: ``[M, P+1]`` tensors or per-image lists of them, rows
    aligned (the same pairs). No rows -> a 0 that keeps the child's graph.

    With confidence weights the term is the confidence-weighted cross-entropy of the released code
    (``-sum_c c_w p_c log q_c``) minus a constant of the parent (``-sum_c c_w p_c log p_c``): same
    gradient, 0 when the child equals the parent, but no longer a divergence: it can be negative,
    and its optimum moves the child towards the classes the parent is confident in.
    """

    def __init__(self, temperature: float = 2.0, use_confidence: bool = False,
                 confidence: Optional[torch.Tensor] = None, parent_classes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.use_confidence = bool(use_confidence)
        if self.use_confidence and confidence is None:
            raise ValueError("use_confidence needs the parent's per-predicate confidence (validation recall)")
        self.register_buffer("confidence", None if confidence is None
                             else torch.as_tensor(confidence, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("parent_classes", None if parent_classes is None
                             else torch.as_tensor(parent_classes, dtype=torch.long).clone(), persistent=False)

    def forward(self, child_logits: Union[torch.Tensor, Sequence[torch.Tensor]],
                parent_logits: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        if not torch.is_tensor(child_logits):
            child_logits = torch.cat(list(child_logits), dim=0)
        if not torch.is_tensor(parent_logits):
            parent_logits = torch.cat(list(parent_logits), dim=0)
        if child_logits.shape[0] != parent_logits.shape[0]:
            raise ValueError(f"child and parent scored different pairs: {child_logits.shape[0]} vs "
                             f"{parent_logits.shape[0]} rows")
        if child_logits.shape[0] == 0:
            return child_logits.sum() * 0.0
        T = self.temperature
        cl, pl = child_logits.float(), parent_logits.detach().float().to(child_logits.device)
        if self.parent_classes is not None:
            cls = self.parent_classes.to(cl.device)
            cl, pl = cl.index_select(1, cls), pl.index_select(1, cls)
        log_p = F.log_softmax(pl / T, dim=1)
        log_q = F.log_softmax(cl / T, dim=1)
        term = log_p.exp() * (log_p - log_q)
        if self.use_confidence:
            conf = self.confidence.to(cl.device)
            if self.parent_classes is not None:
                conf = conf.index_select(0, self.parent_classes.to(cl.device))
            term = term * conf
        return term.sum(dim=1).mean() * (T * T)


def confidence_from_metrics(metrics: Mapping[str, Any], num_rel_classes: int, k: int = 100,
                            no_graph_constraint: bool = False) -> torch.Tensor:
    """float32 ``[P+1]`` per-predicate recall ``per_predicate_R@k`` (the evaluator's list of P
    values for predicates 1..P), background 1.0: the parent's confidence for the distillation."""
    key = f"{'ng_' if no_graph_constraint else ''}per_predicate_R@{k}"
    if key not in metrics:
        raise KeyError(f"metrics have no {key!r} (keys: {sorted(k_ for k_ in metrics if 'per_predicate' in k_)})")
    vals = [float(v) for v in metrics[key]]
    if len(vals) != num_rel_classes - 1:
        raise ValueError(f"{key} has {len(vals)} values, expected P = {num_rel_classes - 1}")
    conf = torch.tensor([1.0] + vals, dtype=torch.float32)
    return torch.nan_to_num(conf, nan=0.0)


@torch.no_grad()
def parent_logits_on_pairs(parent_head: RelationHead, features: Mapping[str, torch.Tensor],
                           proposals: Sequence[Any], rel_pairs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Predicate logits of ``parent_head`` (eval mode, no grad) on GIVEN pairs: its own object
    and union feature extractors, then its predictor, exactly as its eval forward does, but on
    ``rel_pairs`` instead of all pairs. PredCls passes the proposals' labels as object labels (as
    eval does); SGCls/SGDet let the parent classify the objects itself.

    Args: ``features`` the detector's maps, ``proposals`` per image (as the child's predictor saw
    them), ``rel_pairs`` per image int64 ``[M_i, 2]``. Returns per image ``[M_i, P+1]`` (detached),
    rows aligned with ``rel_pairs``. The head's train/eval state is restored afterwards.
    """
    was_training = parent_head.training
    parent_head.eval()
    try:
        proposals = list(proposals)
        roi = parent_head.box_feature_extractor(features, proposals)
        union = None
        if parent_head.use_union_features:
            union = parent_head.union_feature_extractor(features, proposals, rel_pairs)
        obj_labels = None
        if parent_head.mode == "predcls":
            obj_labels = torch.cat([p.labels.long() for p in proposals]) if proposals else None
        out = parent_head.predictor(roi, proposals, rel_pairs, union, obj_labels=obj_labels)
        return [r.detach() for r in out.rel_logits]
    finally:
        parent_head.train(was_training)


@dataclass
class TapRecord:
    """What a RelationHead saw and produced in one forward (see :class:`RelationHeadTap`)."""

    features: Any = None
    proposals: Optional[List[Any]] = None
    rel_pairs: Optional[List[torch.Tensor]] = None
    rel_logits: Optional[List[torch.Tensor]] = None
    rel_labels: Optional[List[torch.Tensor]] = None
    obj_labels: Optional[torch.Tensor] = None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class RelationHeadTap:
    """Forward hooks on a :class:`RelationHead` that record, for its latest training forward, the
    detector features, the proposals and sampled pairs its predictor got, the predicate logits
    (attached to the graph) and the sampled labels. Nothing in the head changes: the hooks only
    read. ``pop()`` returns the record and forgets it (so the features are not held longer).

    ``training_only`` (default True): eval forwards (validation) are not recorded.
    """

    def __init__(self, head: RelationHead, training_only: bool = True) -> None:
        self.head = head
        self.training_only = training_only
        self.record: Optional[TapRecord] = None
        self._handles = [
            head.register_forward_pre_hook(self._head_pre, with_kwargs=True),
            head.predictor.register_forward_pre_hook(self._pred_pre, with_kwargs=True),
            head.predictor.register_forward_hook(self._pred_post, with_kwargs=True),
            head.loss_evaluator.register_forward_pre_hook(self._loss_pre, with_kwargs=True),
        ]

    def _active(self) -> bool:
        return self.head.training or not self.training_only

    def _head_pre(self, module, args, kwargs):
        if self._active():
            self.record = TapRecord(features=_arg(args, kwargs, 0, "features"))

    def _pred_pre(self, module, args, kwargs):
        if self._active() and self.record is not None:
            self.record.proposals = list(_arg(args, kwargs, 1, "proposals"))
            self.record.rel_pairs = list(_arg(args, kwargs, 2, "rel_pairs"))
            self.record.obj_labels = _arg(args, kwargs, 4, "obj_labels")

    def _pred_post(self, module, args, kwargs, output):
        if self._active() and self.record is not None:
            self.record.rel_logits = list(output.rel_logits)

    def _loss_pre(self, module, args, kwargs):
        if self._active() and self.record is not None:
            self.record.rel_labels = list(_arg(args, kwargs, 1, "rel_labels"))

    def pop(self) -> Optional[TapRecord]:
        rec, self.record = self.record, None
        return rec

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.record = None


def build_parent_head(model: nn.Module, state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> RelationHead:
    """A frozen copy (eval mode, no grad, same device) of ``model``'s relation head, loaded with
    ``state_dict`` (the stage-1 head's, strict) when given. It is not a submodule of the model, so
    neither the optimizer, nor DDP, nor checkpoints see it. Build it before attaching a
    :class:`RelationHeadTap` to the child (a deep copy would carry the tap's hooks along; they
    record nothing in eval mode, but hold a copy of the tap)."""
    _, head = find_relation_head(model)
    parent = copy.deepcopy(head)
    if state_dict is not None:
        parent.load_state_dict(dict(state_dict), strict=True)
    parent.requires_grad_(False)
    return parent.eval()


def init_from_stage1(model: nn.Module, state: "Stage1State") -> None:
    """Start stage 2 from the stage-1 relation head (MODEL.HML.FRESH_INIT_STAGE2 False)."""
    _, head = find_relation_head(model)
    head.load_state_dict(dict(state.parent_state_dict), strict=True)


# ---------------------------------------------------------------------------------------------
# Stage files
# ---------------------------------------------------------------------------------------------
@dataclass
class Stage1State:
    """The stage-1 memory, as :func:`load_stage1` returns it (CPU tensors)."""

    theta_star: Dict[str, torch.Tensor]
    fisher: Dict[str, torch.Tensor]
    hierarchy: PredicateHierarchy
    parent_state_dict: Dict[str, torch.Tensor]
    confidence: Optional[torch.Tensor] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def _cpu(d: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {str(k): v.detach().cpu().contiguous().clone() for k, v in d.items()}


def save_stage1(directory: str, theta_star: Mapping[str, torch.Tensor], fisher: Mapping[str, torch.Tensor],
                hierarchy: PredicateHierarchy, parent_state_dict: Mapping[str, torch.Tensor],
                confidence: Optional[torch.Tensor] = None, meta: Optional[Mapping[str, Any]] = None) -> str:
    """Write the stage-1 memory to ``directory/hml_stage1.pth`` atomically (one ``torch.save``
    of a dict of CPU tensors and plain values, readable with ``weights_only=True``) and return the
    path. Plain I/O: in a distributed run call it on rank 0 only, then ``comm.synchronize()``.

    ``theta_star`` / ``fisher``: ``{parameter name: tensor}`` with the same keys and shapes;
    ``parent_state_dict``: the stage-1 relation head's state dict (:func:`relation_head_state`);
    ``confidence``: optional float ``[P+1]`` per-predicate validation recall of the stage-1 model;
    ``meta``: optional plain values (iterations, predictor name, ...).
    """
    if set(theta_star) != set(fisher):
        raise ValueError("theta_star and fisher must have the same parameter names")
    bad = [n for n in theta_star if tuple(theta_star[n].shape) != tuple(fisher[n].shape)]
    if bad:
        raise ValueError(f"theta_star and fisher differ in shape for {bad[:5]}")
    obj = {
        "format": _FORMAT,
        "version": _VERSION,
        "theta_star": _cpu(theta_star),
        "fisher": _cpu(fisher),
        "hierarchy": hierarchy.to_dict(),
        "parent": _cpu(parent_state_dict),
        "confidence": None if confidence is None else torch.as_tensor(confidence, dtype=torch.float32).cpu().clone(),
        "meta": dict(meta or {}),
    }
    path = stage1_file(directory)
    atomic_torch_save(obj, path)
    logger.info("HML stage-1 memory (%d anchored tensors, %d entries) saved to %s", len(theta_star),
                sum(t.numel() for t in theta_star.values()), path)
    return path


def load_stage1(directory: str) -> Stage1State:
    """Read :func:`save_stage1`'s file (``directory`` or the file path itself) onto the CPU."""
    path = stage1_file(directory)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"HML stage-1 file not found: {path}. Run stage 1 first (MODEL.HML.STAGE 1 or 0) or point "
            f"MODEL.HML.STAGE1_DIR at the folder that holds {STAGE1_FILE}.")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an HML stage-1 file")
    if int(obj.get("version", 0)) > _VERSION:
        raise ValueError(f"{path} has format version {obj['version']}; this sgg reads up to {_VERSION}")
    return Stage1State(theta_star=dict(obj["theta_star"]), fisher=dict(obj["fisher"]),
                       hierarchy=PredicateHierarchy.from_dict(obj["hierarchy"]),
                       parent_state_dict=dict(obj["parent"]), confidence=obj.get("confidence"),
                       meta=dict(obj.get("meta") or {}))


# ---------------------------------------------------------------------------------------------
# Stage 2: the trainer's extra loss
# ---------------------------------------------------------------------------------------------
class HMLLoss:
    """Stage 2 of HML as a trainer ``extra_losses`` callable ``fn(model, batch, outputs)``.

    The three terms of the stage-2 loss, each logged by the trainer:

    * ``loss_rel``: the class-balanced cross-entropy over all predicates. It is the model's own
      term: :meth:`attach` installs an :class:`HMLRelationLoss` with ``class_weights`` as the
      relation head's loss (the head sees the sampled labels; no second CE is computed);
    * ``loss_distill``: ``distill_weight *`` :class:`PredictionDistillation` between the child's
      logits (recorded by a :class:`RelationHeadTap` during the model's forward) and the parent's
      logits on the same pairs (:func:`parent_logits_on_pairs`);
    * ``loss_anchor``: :class:`ParameterAnchoring` of the model's parameters.

    ``loss_refine_obj`` (SGCls/SGDet) stays as the head computes it.

    Args:
        parent_head: the frozen stage-1 relation head (:func:`build_parent_head`).
        distillation, anchoring: the two memory terms.
        class_weights: float ``[P+1]`` for the head's CE (None: unweighted).
        distill_weight: MODEL.HML.DISTILL_WEIGHT (0 skips the parent's forward).
    """

    def __init__(self, parent_head: RelationHead, distillation: PredictionDistillation,
                 anchoring: Optional[ParameterAnchoring], class_weights: Optional[torch.Tensor] = None,
                 distill_weight: float = 1.0) -> None:
        self.parent_head = parent_head
        self.distillation = distillation
        self.anchoring = anchoring
        self.class_weights = class_weights
        self.distill_weight = float(distill_weight)
        self.tap: Optional[RelationHeadTap] = None

    @classmethod
    def from_config(cls, cfg: CN, model: nn.Module, stage1: Stage1State, predicate_counts: Any,
                    attach: bool = True) -> "HMLLoss":
        """Build stage 2 from the config and the stage-1 memory: parent head (on the model's
        device), class-balanced weights (MODEL.HML.CLASS_BALANCE_BETA over ``predicate_counts``),
        distillation (T, confidence, the hierarchy's stage-1 classes), anchoring
        (θ*, :func:`fisher_weights` of F, SOLVER.LAMBDA_FOR_PARAM, SOLVER.DISTILL_TYPE); then
        :meth:`attach` to ``model`` unless ``attach`` is False. Does not touch the model's weights
        (:func:`init_from_stage1` does)."""
        validate_hml_config(cfg)
        device = next(unwrap_model(model).parameters()).device
        hier = stage1.hierarchy
        _, head = find_relation_head(model)
        num_rel = getattr(head.predictor, "num_rel_cls", hier.num_classes)
        if hier.num_classes != num_rel:
            raise ValueError(f"the stage-1 hierarchy has {hier.num_classes} predicate classes, the model {num_rel}")
        parent = build_parent_head(model, stage1.parent_state_dict).to(device)
        weights = class_balanced_weights(predicate_counts, cfg.MODEL.HML.CLASS_BALANCE_BETA)
        conf = None
        if cfg.MODEL.USE_CONFIDENCE:
            if stage1.confidence is None:
                raise ValueError("MODEL.USE_CONFIDENCE True, but the stage-1 file holds no per-predicate "
                                 "confidence (stage 1 ran without validation)")
            conf = stage1.confidence
        distill = PredictionDistillation(cfg.MODEL.DISTILL_TEMPERATURE, cfg.MODEL.USE_CONFIDENCE, conf,
                                         hier.stage_classes(1)).to(device)
        anchoring = ParameterAnchoring(stage1.theta_star, fisher_weights(stage1.fisher),
                                       cfg.SOLVER.LAMBDA_FOR_PARAM, cfg.SOLVER.DISTILL_TYPE).to(device)
        out = cls(parent, distill, anchoring, class_weights=weights, distill_weight=cfg.MODEL.HML.DISTILL_WEIGHT)
        if attach:
            out.attach(model)
        return out

    def attach(self, model: nn.Module) -> "HMLLoss":
        """Install the weighted CE as the model's relation-head loss and the tap that records the
        head's pairs and logits. Call before building the trainer (and its EMA / DDP wrapper)."""
        _, head = find_relation_head(model)
        head.loss_evaluator = HMLRelationLoss.like(head.loss_evaluator, class_weights=self.class_weights)
        if self.tap is not None:
            self.tap.remove()
        self.tap = RelationHeadTap(head)
        return self

    def detach(self) -> None:
        """Remove the tap (the head keeps its weighted loss)."""
        if self.tap is not None:
            self.tap.remove()
            self.tap = None

    def __call__(self, model: nn.Module, batch: Any = None, outputs: Any = None) -> Dict[str, torch.Tensor]:
        if self.tap is None:
            raise RuntimeError("HMLLoss is not attached to a model (call attach(model) before training)")
        rec = self.tap.pop()
        if rec is None or rec.rel_logits is None:
            raise RuntimeError("the relation head ran no training forward before HMLLoss was called")
        child = torch.cat(rec.rel_logits, dim=0)
        if self.distill_weight > 0:
            parent = parent_logits_on_pairs(self.parent_head, rec.features, rec.proposals, rec.rel_pairs)
            loss_distill = self.distill_weight * self.distillation(child, torch.cat(parent, dim=0))
        else:
            loss_distill = child.sum() * 0.0
        if self.anchoring is not None and self.anchoring.lam > 0:
            loss_anchor = self.anchoring(model)
        else:
            loss_anchor = child.new_zeros((), dtype=torch.float32)
        return {"loss_distill": loss_distill, "loss_anchor": loss_anchor}
