"""Training hooks: LR schedule, validation (+ plateau schedule, best model), checkpoints, metrics.

A hook sees the trainer as ``self.trainer`` and is called around the loop::

    before_train()
    for each iteration:  before_step(); trainer.run_step(); after_step()
    after_train()        # always, also after an error: check trainer.state

``trainer.iter`` is the number of completed iterations (1-based during ``after_step``: the
iteration that just ran). A hook whose :meth:`HookBase.state_dict` returns something is saved in
every checkpoint and restored on resume.

Order matters (the defaults of :func:`default_hooks`): the LR schedule steps first, then
validation (it may lower the LR and request an early stop), then the checkpoint (so it holds the
schedule, the plateau bookkeeping and the best metric of this iteration), then the writer.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import logging
import os
import random
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch

from sgg.checkpoint import BEST_NAME, FINAL_NAME
from sgg.utils import comm

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks (all methods are optional)."""

    trainer: Any = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """State to keep in checkpoints (None: nothing)."""
        return None

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


# ---------------------------------------------------------------------------------------------
class LRScheduler(HookBase):
    """Records the LR used by the iteration, then steps the schedule (once per iteration)."""

    def __init__(self, scheduler: Any = None) -> None:
        self._scheduler = scheduler

    @property
    def scheduler(self) -> Any:
        return self._scheduler if self._scheduler is not None else self.trainer.scheduler

    def after_step(self) -> None:
        groups = self.trainer.optimizer.param_groups
        # the LR of the largest group is the one worth a plot (bias groups may differ by a factor)
        main = max(groups, key=lambda g: sum(p.numel() for p in g["params"]))
        self.trainer.storage.put_scalar("lr", main["lr"])
        if self.scheduler is not None:
            self.scheduler.step()


# ---------------------------------------------------------------------------------------------
class PeriodicCheckpointer(HookBase):
    """``model_{iter:07d}.pth`` every ``period`` iterations, ``model_final.pth`` at the end.

    The final checkpoint is written when training completes or stops early (plateau), never
    after an error; a SIGTERM checkpoint is written by the trainer itself.
    """

    def __init__(self, period: int, file_prefix: str = "model") -> None:
        self.period = int(period)
        self.file_prefix = file_prefix

    def after_step(self) -> None:
        it, max_iter = self.trainer.iter, self.trainer.max_iter
        if self.period > 0 and it % self.period == 0 and it < max_iter:
            self.trainer.save_checkpoint(f"{self.file_prefix}_{it:07d}")

    def after_train(self) -> None:
        t = self.trainer
        if t.state not in ("completed", "stopped_early"):
            return
        # a run resumed at its end writes it only if missing (e.g. resumed from a SIGTERM checkpoint
        # whose deferred validation stops the schedule)
        if t.iter > t.start_iter or not comm.broadcast_object(  # rank 0 decides (it writes)
                os.path.isfile(t.checkpointer.path_of(FINAL_NAME)) if comm.is_main_process() else None):
            t.save_checkpoint(FINAL_NAME)


# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def preserve_rng():
    """Run a block without disturbing the python / numpy / torch (CPU and current CUDA device)
    RNG streams, so validation does not change the training trajectory."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def flatten_results(results: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
    """Nested dict -> ``{"a/b": float}``; non-numeric leaves are dropped."""
    flat: Dict[str, float] = {}
    for k, v in (results or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_results(v, key + "/"))
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            flat[key] = float(v)
        elif torch.is_tensor(v) and v.numel() == 1:
            flat[key] = float(v.item())
    return flat


def find_metric(flat: Mapping[str, float], name: str) -> float:
    """``flat[name]``, or the unique entry whose key ends with ``/name``."""
    if name in flat:
        return flat[name]
    hits = [k for k in flat if k.endswith("/" + name)]
    if len(hits) == 1:
        return flat[hits[0]]
    what = "several entries end with it: " + ", ".join(hits) if hits else "it is not in the results"
    raise KeyError(f"validation metric {name!r} (SOLVER.VAL_METRIC): {what}; "
                   f"available: {', '.join(sorted(flat)) or '(none)'}")


class EvalHook(HookBase):
    """Validation every ``period`` iterations (and at the last iteration).

    ``evaluate_fn(model) -> dict`` is called on every rank with the unwrapped model in eval mode
    (the EMA weights when the trainer keeps an EMA), under ``torch.no_grad`` and without touching
    the training RNG streams; the result of rank 0 is broadcast. Then:

    * the metric ``metric`` (e.g. ``"R@100"``) is fed to a schedule that has ``report`` (the plateau
      schedule, which may lower the LR or ask to stop);
    * a new best value (higher is better) writes ``model_best.pth`` with ``best_metric``
      ``{"name", "value", "iteration"}``;
    * all numbers go to ``trainer.storage`` for the writer (``val/<key>``).

    ``pre_val`` (SOLVER.PRE_VAL) also validates once before the first iteration (logged only).

    A validation due when a SIGTERM has come (``trainer.agree_on_stop()``, which also stops the
    loop after this iteration) is not run then (it could outlast torchrun's grace period before the
    checkpoint is written): the checkpoint records it as pending and the resumed run runs it first,
    on the same weights, so schedule, best model and metrics end as in an uninterrupted run.
    """

    def __init__(self, period: int, evaluate_fn: Callable[[torch.nn.Module], Mapping[str, Any]],
                 metric: str = "R@100", pre_val: bool = False, eval_at_end: bool = True,
                 use_ema: bool = True) -> None:
        self.period = int(period)
        self.evaluate_fn = evaluate_fn
        self.metric = metric
        self.pre_val = pre_val
        self.eval_at_end = eval_at_end
        self.use_ema = use_ema
        self.best_value: Optional[float] = None
        self.best_iter: Optional[int] = None
        self.pending: Optional[int] = None  # iteration whose validation a SIGTERM deferred

    def _model(self) -> torch.nn.Module:
        ema = getattr(self.trainer, "ema", None)
        return ema.model if (self.use_ema and ema is not None) else self.trainer.model

    def evaluate(self) -> Dict[str, float]:
        model = self._model()
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with preserve_rng(), torch.no_grad():
                results = self.evaluate_fn(model)
        finally:
            model.train(was_training)
        results = comm.broadcast_object(results if comm.is_main_process() else None)
        flat = flatten_results(results or {})
        logger.info("validation at iteration %d (%.1f s): %s", self.trainer.iter, time.perf_counter() - t0,
                    ", ".join(f"{k}: {v:.4f}" for k, v in flat.items()))
        self.trainer.storage.put_eval({f"val/{k}": v for k, v in flat.items()})
        return flat

    def before_train(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None and pending == self.trainer.iter:
            logger.info("running the validation of iteration %d that a SIGTERM deferred", pending)
            self._validate(pending)
        if self.pre_val:
            self.evaluate()

    def after_step(self) -> None:
        it = self.trainer.iter
        due = self.period > 0 and it % self.period == 0
        if not (due or (self.eval_at_end and it == self.trainer.max_iter)):
            return
        agree = getattr(self.trainer, "agree_on_stop", None)  # collective: the ranks decide alike
        if agree is not None and agree():
            self.pending = it
            logger.warning("SIGTERM: the validation of iteration %d is deferred to the resumed run", it)
            return
        self._validate(it)

    def _validate(self, it: int) -> None:
        due = self.period > 0 and it % self.period == 0
        flat = self.evaluate()
        value = find_metric(flat, self.metric)
        scheduler = self.trainer.scheduler
        if due and hasattr(scheduler, "report"):
            scheduler.report(value)
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_iter = value, it
            logger.info("new best %s = %.4f at iteration %d", self.metric, value, it)
            self.trainer.checkpointer.save_model(
                BEST_NAME, state_dict=self._model().state_dict(), iteration=it,
                best_metric={"name": self.metric, "value": value, "iteration": it})
        comm.synchronize()

    def state_dict(self) -> Dict[str, Any]:
        return {"best_value": self.best_value, "best_iter": self.best_iter, "pending": self.pending}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_iter = state.get("best_iter")
        self.pending = state.get("pending")


# ---------------------------------------------------------------------------------------------
class MetricsWriter(HookBase):
    """Every ``period`` iterations (and at the last one): a console line with the ETA, a JSON line
    in ``<output_dir>/metrics.json`` and tensorboard scalars (rank 0 only).

    Loss terms and times are averaged over the iterations since the last write; ``lr`` is the
    latest. Validation results are written as soon as they exist. At the end of training (not
    after a SIGTERM stop, which resumes later) ``plot_curves`` draws ``<output_dir>/training_curves.png``
    from ``metrics.json`` (:func:`sgg.utils.curves.plot_training_curves`); a plotting error only
    logs a warning.
    """

    def __init__(self, output_dir: str, period: int = 20, tensorboard: bool = True,
                 plot_curves: bool = True) -> None:
        self.output_dir = output_dir
        self.period = max(1, int(period))
        self.tensorboard = tensorboard
        self.plot_curves = plot_curves
        self._json = None
        self._tb = None
        self._recent_times: List[float] = []

    def before_train(self) -> None:
        if not comm.is_main_process() or not self.output_dir:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        self._json = open(os.path.join(self.output_dir, "metrics.json"), "a")
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is an install requirement, but be forgiving
                logger.warning("tensorboard unavailable (%s); writing metrics.json only", e)
            else:
                self._tb = SummaryWriter(log_dir=self.output_dir)

    def after_step(self) -> None:
        t = self.trainer
        storage = t.storage
        self._recent_times.append(storage.latest.get("time", 0.0))
        self._recent_times = self._recent_times[-100:]
        evals = storage.pop_eval()
        if evals:
            self._write(t.iter, evals, console=False)
        if t.iter % self.period == 0 or t.iter == t.max_iter:
            self.write_window()

    def write_window(self) -> None:
        t = self.trainer
        window = t.storage.pop_window()
        if not window:
            return
        row: Dict[str, float] = {}
        for k, vals in window.items():
            row[k] = vals[-1] if k == "lr" else float(np.mean(vals))
        remaining = t.max_iter - t.iter
        eta = float(np.median(self._recent_times)) * remaining if self._recent_times else 0.0
        row["eta_seconds"] = eta
        if torch.cuda.is_available() and t.device.type == "cuda":
            row["max_mem_mb"] = torch.cuda.max_memory_allocated(t.device) / 2 ** 20
        self._write(t.iter, row, console=True)

    def _write(self, it: int, row: Dict[str, float], console: bool) -> None:
        if not comm.is_main_process():
            return
        if console:
            t = self.trainer
            losses = "  ".join(f"{k}: {v:.4g}" for k, v in row.items() if k.startswith(("total_loss", "loss")))
            others = "  ".join(f"{k}: {v:.4g}" for k, v in row.items()
                               if not k.startswith(("total_loss", "loss")) and
                               k not in ("lr", "time", "data_time", "eta_seconds", "max_mem_mb"))
            eta = str(datetime.timedelta(seconds=int(row.get("eta_seconds", 0))))
            mem = f"  max_mem: {row['max_mem_mb']:.0f}M" if "max_mem_mb" in row else ""
            logger.info("eta: %s  iter: %d/%d  %s%s  time: %.4f  data_time: %.4f  lr: %.6g%s", eta, it,
                        t.max_iter, losses, ("  " + others) if others else "", row.get("time", 0.0),
                        row.get("data_time", 0.0), row.get("lr", float("nan")), mem)
        if self._json is not None:
            # strict JSON: NaN / inf (e.g. zR on a split without zero-shot rows) are written as null
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            self._json.write(json.dumps({"iteration": it, **clean}, sort_keys=False, allow_nan=False) + "\n")
            self._json.flush()
        if self._tb is not None:
            for k, v in row.items():
                self._tb.add_scalar(k, v, it)
            self._tb.flush()

    def after_train(self) -> None:
        if self.trainer is not None and self.trainer.storage is not None:
            evals = self.trainer.storage.pop_eval()
            if evals:
                self._write(self.trainer.iter, evals, console=False)
            if self.trainer.state != "failed":
                self.write_window()
        wrote_json = self._json is not None
        if self._json is not None:
            self._json.close()
            self._json = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if wrote_json and self.plot_curves and getattr(self.trainer, "state", None) != "preempted":
            self._plot_curves()

    def _plot_curves(self) -> None:
        """``training_curves.png`` from ``metrics.json`` (rank 0); never raises."""
        path = os.path.join(self.output_dir, "metrics.json")
        try:
            from sgg.utils.curves import plot_training_curves

            out = plot_training_curves(path, os.path.join(self.output_dir, "training_curves.png"))
            logger.info("training curves written to %s", out)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a training run
            logger.warning("could not plot the training curves from %s (%s: %s)", path, type(e).__name__, e)


# ---------------------------------------------------------------------------------------------
def default_hooks(cfg: Any, evaluate_fn: Optional[Callable[[torch.nn.Module], Mapping[str, Any]]] = None
                  ) -> List[HookBase]:
    """LR schedule, validation (when ``evaluate_fn`` and SOLVER.TO_VAL / PRE_VAL), periodic
    checkpoints, metrics writer — in that order."""
    s = cfg.SOLVER
    hooks: List[HookBase] = [LRScheduler()]
    if evaluate_fn is not None and (s.TO_VAL or s.PRE_VAL):
        hooks.append(EvalHook(s.VAL_PERIOD if s.TO_VAL else 0, evaluate_fn, metric=s.VAL_METRIC,
                              pre_val=s.PRE_VAL, eval_at_end=s.TO_VAL))
    elif s.SCHEDULE.TYPE == "WarmupReduceLROnPlateau":
        logger.warning("SOLVER.SCHEDULE.TYPE WarmupReduceLROnPlateau without validation (no evaluate_fn or "
                       "SOLVER.TO_VAL False): the LR will never decay after warm-up")
    hooks.append(PeriodicCheckpointer(s.CHECKPOINT_PERIOD))
    hooks.append(MetricsWriter(cfg.OUTPUT_DIR, s.LOG_PERIOD, tensorboard=s.TENSORBOARD))
    return hooks
