"""The parameters HML anchors and their diagonal empirical Fisher: :func:`hml_anchor_params`
(the relation predictor's), :func:`snapshot` (θ*), :func:`estimate_fisher` (squared gradients of
:func:`training_loss`, averaged over the ranks by :func:`all_reduce_mean`, EMA over batches) and
:func:`fisher_weights` (``w = sigmoid(log10 F − mean(log10 F))``, the anchoring weights).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from sgg.checkpoint import unwrap_model
from sgg.utils import comm

from .heads import find_relation_head

logger = logging.getLogger(__name__)

__all__ = [
    "all_reduce_mean",
    "estimate_fisher",
    "fisher_weights",
    "hml_anchor_params",
    "snapshot",
    "training_loss",
]


# ---------------------------------------------------------------------------------------------
# The anchored parameters
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


# ---------------------------------------------------------------------------------------------
# Fisher
# ---------------------------------------------------------------------------------------------
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
