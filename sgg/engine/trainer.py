"""The iteration-based trainer shared by every model (two-stage, one-stage, distillation).

Contract with the model: ``model(batch)`` in training mode returns ``dict[str, Tensor]``; the
entries whose key starts with ``"loss"`` are scalar tensors summed into the loss that is
back-propagated, other scalar entries are logged only. Extra loss terms (distillation, parameter
anchoring) come from ``extra_losses``: callables ``fn(model, batch, outputs) -> {"loss_x": ...}``
evaluated right after the forward pass (same autocast region) with the unwrapped model; as for the
model, their ``loss*`` entries are summed and their other scalar entries only logged (e.g. a
frozen teacher's own losses, for monitoring).

One iteration (``trainer.iter`` counts completed iterations; iteration ``i`` is 1-based)::

    batch = next(data); batch = batch_to_device(batch, device)
    with autocast(DTYPE): outputs = ddp_model(batch); losses = outputs["loss*"] + extra_losses
    total = sum(losses)             -> non-finite on any rank: FloatingPointError naming the
                                       iteration and every term; nothing is saved
    scaler.scale(total).backward(); scaler.unscale_; clip_grad_norm_(GRAD_NORM_CLIP)
    scaler.step(optimizer); scaler.update(); ema.update()
    hooks.after_step()              -> LR schedule step, validation, checkpoint, metrics

Data: ``data_loader`` is an iterable of batches, or better a factory ``data_loader(start_iter)``
that returns one positioned at ``start_iter`` (:func:`sgg.data.build.build_train_loader`, with or
without aspect-ratio grouping; :class:`sgg.data.samplers.TrainingSampler` with ``start =
start_iter * IMS_PER_BATCH``), so a resumed run sees the same batches as an uninterrupted one.
Resume restores model, optimizer, schedule, GradScaler, EMA, hook state and the RNG state of every
rank (applied right before the first resumed iteration, after the data iterator exists); together
with a deterministic sampler the continuation is bit-identical on CPU.

SIGTERM (a cluster preemption, ``kill``, torchrun shutting its ranks down) finishes the current
iteration, writes a checkpoint and returns from :meth:`Trainer.train` normally (``trainer.state ==
"preempted"``); the ranks agree on the stop through the per-iteration all-reduce, so none is left
waiting (under torchrun, which forwards SIGTERM to every rank and SIGKILLs them after
``--shutdown-timeout``, 30 s by default, they stop within one more iteration). Data-loader workers
ignore a SIGTERM their main process did not send (:func:`sgg.data.build.worker_init_fn`), so a
signal to the whole process group does not break the loader before the checkpoint is written. The
jobs skip their test after a preemption and the commands exit with status 143 (128 + SIGTERM,
:data:`sgg.cli.PREEMPTED_EXIT_STATUS`): the job is not finished, re-running the command resumes it.
"""
from __future__ import annotations

import copy
import logging
import signal
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from sgg.checkpoint import FINAL_NAME, Checkpointer, get_rng_state, restore_rank_rng, unwrap_model
from sgg.solver import build_lr_scheduler, build_optimizer
from sgg.utils import comm
from sgg.utils.device import move_to_device, resolve_device

from .hooks import HookBase, default_hooks

logger = logging.getLogger(__name__)

BatchToDevice = Callable[[Any, torch.device], Any]
ExtraLoss = Callable[[nn.Module, Any, Mapping[str, Any]], Mapping[str, torch.Tensor]]




class ModelEMA:
    """Exponential moving average of a model's weights: ``ema = d * ema + (1 - d) * w`` after
    every optimizer step (floating-point tensors; other buffers are copied), with the warm-up of
    timm's ``ModelEmaV2`` / CenterNet-style trainers: ``d = min(decay, (1 + n) / (10 + n))`` at the
    n-th update. Without it a run of a few thousand iterations at ``decay`` 0.999 would evaluate
    weights that are still ~0.999^n made of the random initialisation.

    ``ema.model`` is a frozen copy in eval mode; use it for validation. State is checkpointed.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(unwrap_model(model)).eval()
        self.model.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        src = unwrap_model(model).state_dict()
        for k, v in self.model.state_dict().items():
            w = src[k].detach()
            if v.dtype.is_floating_point:
                v.lerp_(w.to(v.dtype), 1.0 - decay)
            else:
                v.copy_(w)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Copy the current weights of ``model`` (e.g. after loading initial weights)."""
        self.model.load_state_dict(unwrap_model(model).state_dict())
        self.updates = 0

    def state_dict(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state.get("updates", 0))


class MetricStorage:
    """Per-iteration scalars since the last write (``pop_window``), the latest values, and
    validation results waiting to be written (``pop_eval``)."""

    def __init__(self) -> None:
        self._window: Dict[str, List[float]] = defaultdict(list)
        self.latest: Dict[str, float] = {}
        self._eval: Dict[str, float] = {}

    def put_scalar(self, name: str, value: float) -> None:
        value = float(value)
        self._window[name].append(value)
        self.latest[name] = value

    def put_scalars(self, **values: float) -> None:
        for k, v in values.items():
            self.put_scalar(k, v)

    def pop_window(self) -> Dict[str, List[float]]:
        out = dict(self._window)
        self._window = defaultdict(list)
        return out

    def put_eval(self, results: Mapping[str, float]) -> None:
        self._eval.update(results)
        self.latest.update(results)

    def pop_eval(self) -> Dict[str, float]:
        out, self._eval = self._eval, {}
        return out


def _amp_setup(dtype: str, device: torch.device):
    """(autocast dtype or None, use GradScaler)."""
    if dtype in ("float32", "", None):
        return None, False
    if dtype == "float16":
        if device.type != "cuda":
            logger.warning("DTYPE float16 needs CUDA (GradScaler); training in float32 on %s. "
                           "Use DTYPE bfloat16 for mixed precision on CPU.", device.type)
            return None, False
        return torch.float16, True
    if dtype == "bfloat16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            logger.warning("this GPU does not support bfloat16; training in float32")
            return None, False
        return torch.bfloat16, False
    raise ValueError(f"DTYPE must be float32, float16 or bfloat16, got {dtype!r}")


class Trainer:
    """Iteration-based training loop with AMP, clipping, DDP, EMA, hooks, atomic checkpoints.

    Args:
        model: the model (moved to ``device``; wrapped in DDP when the world size is > 1).
        data_loader: an iterable of batches or a factory ``fn(start_iter) -> iterable``.
        optimizer: over ``model``'s parameters. scheduler: stepped by the LRScheduler hook.
        max_iter: total iterations (SOLVER.MAX_ITER).
        device: defaults to the model's device. dtype: "float32" | "float16" | "bfloat16".
        grad_clip: max total gradient norm (<= 0: no clipping).
        ema_decay: > 0 keeps an EMA of the weights (``trainer.ema``).
        find_unused_parameters, broadcast_buffers: passed to DistributedDataParallel.
        batch_to_device: ``fn(batch, device) -> batch`` (default :func:`move_to_device`).
        extra_losses: callables ``fn(model, batch, outputs) -> {"loss_*": tensor, other: scalar}``
            (``loss*`` entries summed, other scalar entries logged only).
        output_dir: where checkpoints go; cfg: stored in checkpoints.
        checkpointer: defaults to a :class:`sgg.checkpoint.Checkpointer` over everything.
        handle_sigterm: install the SIGTERM handler during :meth:`train` (main thread only).
    """

    def __init__(self, model: nn.Module, data_loader: Union[Iterable, Callable[[int], Iterable]],
                 optimizer: torch.optim.Optimizer, scheduler: Any = None, *, max_iter: int,
                 device: Optional[Union[str, torch.device]] = None, dtype: str = "float32",
                 grad_clip: float = 0.0, ema_decay: float = 0.0, find_unused_parameters: bool = False,
                 broadcast_buffers: bool = False, batch_to_device: Optional[BatchToDevice] = None,
                 extra_losses: Sequence[ExtraLoss] = (), output_dir: str = "", cfg: Any = None,
                 checkpointer: Optional[Checkpointer] = None, handle_sigterm: bool = True) -> None:
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = unwrap_model(model).to(self.device)
        self.model.train()
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_iter = int(max_iter)
        self.grad_clip = float(grad_clip or 0.0)
        self.batch_to_device = batch_to_device or move_to_device
        self.extra_losses = list(extra_losses)
        self.handle_sigterm = handle_sigterm
        self.amp_dtype, use_scaler = _amp_setup(dtype, self.device)
        if hasattr(torch.amp, "GradScaler"):
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        else:  # torch < 2.3
            self.scaler = torch.cuda.amp.GradScaler(enabled=use_scaler)

        if comm.get_world_size() > 1:
            kwargs: Dict[str, Any] = dict(find_unused_parameters=find_unused_parameters,
                                          broadcast_buffers=broadcast_buffers)
            if self.device.type == "cuda":
                index = self.device.index if self.device.index is not None else torch.cuda.current_device()
                kwargs.update(device_ids=[index], output_device=index)
            self.ddp_model: nn.Module = nn.parallel.DistributedDataParallel(self.model, **kwargs)
        else:
            self.ddp_model = self.model
        # after DDP: every rank starts the EMA from rank 0's broadcast weights
        self.ema = ModelEMA(self.model, ema_decay) if ema_decay and ema_decay > 0 else None

        self.checkpointer = checkpointer or Checkpointer(
            self.model, output_dir, cfg=cfg, optimizer=optimizer, scheduler=scheduler,
            scaler=self.scaler, ema=self.ema)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.hooks: List[HookBase] = []
        self.storage = MetricStorage()
        self.iter = 0
        self.start_iter = 0
        self.state = "idle"  # running | completed | stopped_early | preempted | failed
        self._sigterm = False
        self._sigterm_agreed = False
        self._last_saved_iter = -1
        self._pending_rng: Optional[List[Dict[str, Any]]] = None
        self._pending_hook_states: Dict[str, Any] = {}
        self._data_iter = None

    # -- construction from a config -------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any, model: nn.Module, data_loader: Union[Iterable, Callable[[int], Iterable]], *,
                    evaluate_fn: Optional[Callable[[nn.Module], Mapping[str, Any]]] = None,
                    batch_to_device: Optional[BatchToDevice] = None, extra_losses: Sequence[ExtraLoss] = (),
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
                    hooks: Optional[List[HookBase]] = None) -> "Trainer":
        """Build optimizer, schedule and the default hooks (:func:`sgg.engine.hooks.default_hooks`)
        from ``cfg``; ``hooks`` replaces the defaults."""
        device = resolve_device(cfg.MODEL.DEVICE)
        model.to(device)  # before the optimizer sees the parameters
        optimizer = optimizer or build_optimizer(cfg, model)
        scheduler = scheduler or build_lr_scheduler(cfg, optimizer)
        s = cfg.SOLVER
        trainer = cls(model, data_loader, optimizer, scheduler, max_iter=s.MAX_ITER, device=device,
                      dtype=cfg.DTYPE, grad_clip=s.GRAD_NORM_CLIP, ema_decay=s.EMA_DECAY,
                      find_unused_parameters=s.FIND_UNUSED_PARAMETERS,
                      batch_to_device=batch_to_device, extra_losses=extra_losses, output_dir=cfg.OUTPUT_DIR,
                      cfg=cfg)
        trainer.register_hooks(hooks if hooks is not None else default_hooks(cfg, evaluate_fn))
        return trainer

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        for h in hooks:
            if h is None:
                continue
            h.trainer = self
            self.hooks.append(h)

    # -- checkpoints ------------------------------------------------------------------------------
    def _hook_keys(self) -> List[str]:
        seen: Dict[str, int] = defaultdict(int)
        keys = []
        for h in self.hooks:
            name = type(h).__name__
            keys.append(name if seen[name] == 0 else f"{name}_{seen[name]}")
            seen[name] += 1
        return keys

    def save_checkpoint(self, name: str, **extra: Any) -> Optional[str]:
        """Collective (call on every rank): gathers every rank's RNG state, rank 0 writes."""
        rng_states = comm.all_gather(get_rng_state())
        hook_states = {}
        for key, h in zip(self._hook_keys(), self.hooks):
            st = h.state_dict()
            if st is not None:
                hook_states[key] = st
        path = self.checkpointer.save(name, iteration=self.iter, rng_states=rng_states, hooks=hook_states, **extra)
        self._last_saved_iter = self.iter
        comm.synchronize()
        return path

    def resume_or_load(self, initial_weights: Optional[str] = "", resume: bool = True) -> int:
        """Resume from OUTPUT_DIR's ``last_checkpoint`` when ``resume`` and one exists (falling
        back to the previous complete checkpoint if it is corrupt); otherwise load the model
        weights of ``initial_weights`` (if given) and start at iteration 0. Returns the start
        iteration."""
        ckpt = self.checkpointer.resume_or_load(initial_weights, resume=resume, restore_rng=False)
        if ckpt:
            self.iter = self.start_iter = int(ckpt.get("iteration", 0))
            self._pending_rng = ckpt.get("rng_states")
            self._pending_hook_states = dict(ckpt.get("hooks") or {})
            if self.ema is not None and "ema" not in ckpt.get("restored", ()):
                self.ema.reset(self.model)
            sched_iter = getattr(self.scheduler, "last_iter", None)
            if sched_iter is not None and sched_iter != self.iter:
                logger.warning("schedule position %s differs from the checkpoint iteration %d", sched_iter,
                               self.iter)
            logger.info("resuming from %s at iteration %d", ckpt.get("path"), self.iter)
        else:
            self.iter = self.start_iter = 0
            if self.ema is not None:
                self.ema.reset(self.model)
        return self.start_iter

    # -- the loop ----------------------------------------------------------------------------------
    def _make_data_iter(self):
        loader = self.data_loader
        if callable(loader) and not hasattr(loader, "__iter__"):
            loader = loader(self.iter)
        elif self.iter > 0:
            logger.warning("resuming at iteration %d with a data_loader that is not a factory fn(start_iter): "
                           "batches will not be those of an uninterrupted run", self.iter)
        self._loader = loader
        return iter(loader)

    def _next_batch(self):
        try:
            return next(self._data_iter)
        except StopIteration:
            logger.info("data loader exhausted at iteration %d; starting it again", self.iter)
            self._data_iter = iter(self._loader)
            return next(self._data_iter)

    @property
    def stop_requested(self) -> bool:
        """Whether the loop stops (SIGTERM) after the iteration in progress; hooks may skip long work
        (validation). One process: a SIGTERM came at any time so far; several: this iteration's
        all-reduce carried one from some rank, so every rank answers the same."""
        return self._sigterm if comm.get_world_size() == 1 else self._sigterm_agreed

    def agree_on_stop(self) -> bool:
        """Collective (every rank at the same point, e.g. a hook before long work): whether a rank
        has received SIGTERM by now. Then :attr:`stop_requested` is true on every rank, and the loop
        stops after this iteration."""
        if comm.get_world_size() > 1 and not self._sigterm_agreed:
            flag = torch.tensor(1.0 if self._sigterm else 0.0, device=self.device)
            self._sigterm_agreed = bool(comm.reduce_dict({"sigterm": flag}, average=False)["sigterm"].item() > 0)
        return self.stop_requested

    def _on_sigterm(self, signum, frame) -> None:  # noqa: ARG002
        self._sigterm = True
        logger.warning("SIGTERM received during iteration %d: stopping with a checkpoint once the iteration in "
                       "progress is complete", self.iter)

    def train(self) -> str:
        """Run from ``self.iter`` to ``max_iter``; returns the final state."""
        self.state = "running"
        self._sigterm = self._sigterm_agreed = False
        installed, prev_handler = False, None
        if self.handle_sigterm and threading.current_thread() is threading.main_thread():
            prev_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            installed = True
        keys = self._hook_keys()
        for key, h in zip(keys, self.hooks):
            if key in self._pending_hook_states:
                h.load_state_dict(self._pending_hook_states[key])
        self._pending_hook_states = {}
        logger.info("starting training at iteration %d of %d (world size %d, device %s, autocast %s)",
                    self.iter, self.max_iter, comm.get_world_size(), self.device,
                    self.amp_dtype if self.amp_dtype is not None else "off")
        try:
            self._data_iter = self._make_data_iter()
            for h in self.hooks:
                h.before_train()
            if self._pending_rng is not None:
                restore_rank_rng(self._pending_rng)
                self._pending_rng = None
            while self.iter < self.max_iter:
                if getattr(self.scheduler, "stop", False):
                    logger.info("the LR schedule reached SOLVER.SCHEDULE.MAX_DECAY_STEP decays: stopping at "
                                "iteration %d", self.iter)
                    self.state = "stopped_early"
                    break
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                for h in self.hooks:
                    h.after_step()
                # one process: react to a signal that came at any time during the iteration;
                # several: to the flag all ranks agreed on in this iteration's all-reduce
                if self.stop_requested:
                    if self._last_saved_iter != self.iter:
                        # after the last iteration the training is done: that checkpoint is the final
                        # one (a re-run then only runs what comes after training, e.g. the test)
                        self.save_checkpoint(FINAL_NAME if self.iter >= self.max_iter else f"model_{self.iter:07d}")
                    logger.warning("stopped by SIGTERM after iteration %d; checkpoint saved (resume to continue)",
                                   self.iter)
                    self.state = "preempted"
                    break
            else:
                self.state = "completed"
        except BaseException:
            self.state = "failed"
            raise
        finally:
            if installed:
                signal.signal(signal.SIGTERM, prev_handler if prev_handler is not None else signal.SIG_DFL)
            for h in self.hooks:
                try:
                    h.after_train()
                except Exception:  # noqa: BLE001
                    if self.state != "failed":
                        raise
                    logger.exception("hook %s failed in after_train", type(h).__name__)
        return self.state

    def _check_losses(self, loss_dict: Mapping[str, Any], required: bool = True) -> Dict[str, torch.Tensor]:
        if not isinstance(loss_dict, Mapping):
            raise TypeError(f"in training mode the model must return a dict of scalar tensors, got "
                            f"{type(loss_dict).__name__}")
        losses = {}
        for k, v in loss_dict.items():
            if not k.startswith("loss"):
                continue
            if not torch.is_tensor(v) or v.numel() != 1:
                raise TypeError(f"loss term {k!r} must be a scalar tensor, got "
                                f"{tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}")
            losses[k] = v.reshape(())
        if not losses and required:
            raise ValueError(f"the model returned no 'loss*' entries (keys: {sorted(loss_dict)})")
        return losses

    def run_step(self) -> None:
        self.iter += 1
        it = self.iter
        t0 = time.perf_counter()
        batch = self._next_batch()
        data_time = time.perf_counter() - t0
        batch = self.batch_to_device(batch, self.device)

        extra_logged: Dict[str, torch.Tensor] = {}
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            outputs = self.ddp_model(batch)
            losses = self._check_losses(outputs)
            for fn in self.extra_losses:
                extra = fn(self.model, batch, outputs)
                clash = set(extra) & set(losses)
                if clash:
                    raise ValueError(f"extra loss terms {sorted(clash)} clash with the model's")
                losses.update(self._check_losses(extra, required=False))
                extra_logged.update({k: v.detach() for k, v in extra.items()
                                     if not k.startswith("loss") and torch.is_tensor(v) and v.numel() == 1})
        total = torch.stack([v.float() for v in losses.values()]).sum()

        # One all-reduce: the summed loss (non-finite anywhere -> all ranks stop together) and the
        # SIGTERM flag (every rank stops at the same iteration).
        flag = torch.tensor(1.0 if self._sigterm else 0.0, device=total.device)
        reduced = comm.reduce_dict({"total_loss": total.detach(), "sigterm": flag}, average=False)
        world = comm.get_world_size()
        total_all = reduced["total_loss"] / world
        self._sigterm_agreed = bool(reduced["sigterm"].item() > 0)
        if not torch.isfinite(total_all):
            self._raise_non_finite(it, outputs, losses, total)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        grad_norm = None
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
            if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"non-finite gradient norm ({grad_norm.item()}) at iteration {it} with finite loss "
                    f"(total_loss={total.item():.6g}); stopping without an optimizer step. No checkpoint of "
                    f"this state was written (last checkpoint: {self.checkpointer.get_checkpoint_file() or 'none'}).")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)

        step_time = time.perf_counter() - t0
        scalars = {"total_loss": total_all.item(), "time": step_time, "data_time": data_time}
        for k, v in losses.items():
            scalars[k] = v.detach().float().item()
        for k, v in outputs.items():
            if not k.startswith("loss") and torch.is_tensor(v) and v.numel() == 1:
                scalars[k] = v.detach().float().item()
        scalars.update({k: v.float().item() for k, v in extra_logged.items()})
        if grad_norm is not None:
            scalars["grad_norm"] = float(grad_norm)
        if self.scaler.is_enabled():
            scalars["loss_scale"] = float(self.scaler.get_scale())
        self.storage.put_scalars(**scalars)

    def _raise_non_finite(self, it: int, outputs: Mapping[str, Any], losses: Mapping[str, torch.Tensor],
                          total: torch.Tensor) -> None:
        terms = {k: float(v.detach().float().item()) for k, v in losses.items()}
        for k, v in outputs.items():
            if k not in terms and torch.is_tensor(v) and v.numel() == 1:
                terms[k] = float(v.detach().float().item())
        where = ""
        if comm.get_world_size() > 1:
            where = (f" on another rank (rank {comm.get_rank()}'s terms are finite)" if torch.isfinite(total)
                     else f" on rank {comm.get_rank()}")
        msg = (f"non-finite loss at iteration {it}{where}: total_loss={total.item()}, "
               + ", ".join(f"{k}={v}" for k, v in terms.items())
               + f". Training stopped; no checkpoint of this state was written (last checkpoint: "
               f"{self.checkpointer.get_checkpoint_file() or 'none'}).")
        logger.error(msg)
        raise FloatingPointError(msg)
