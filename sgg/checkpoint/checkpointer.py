"""Checkpoints: atomic save, resume with fallback, model loading with clear errors.

A training checkpoint ``<OUTPUT_DIR>/<name>.pth`` is one ``torch.save`` dict::

    {"model": state dict (unwrapped from DDP), "optimizer": ..., "scheduler": ..., "scaler": ...,
     "ema": ... (when used), "iteration": int (completed iterations), "rng_states": [per rank
     {"python", "numpy", "torch", "cuda"?}], "config": the run's config as YAML,
     "metadata": the model's ``metadata`` (class / predicate names, protocol, ...), ...extra}

Writes are atomic (:mod:`sgg.utils.io`): a crash mid-write leaves the previous file (and
``last_checkpoint``) untouched. ``last_checkpoint`` (a text file holding the checkpoint's file
name, as in SGB / detectron2) is written the same way after the checkpoint. Only rank 0 writes.
A kill mid-write leaves a temporary file ``.<name>.<pid>-<start>@<host>.<random>.tmp``; the
writing Checkpointer removes such files of dead writers from its directory when a run starts
(:meth:`Checkpointer.resume_or_load`) and before each save
(:func:`sgg.utils.io.clean_stale_temp_files` has the liveness rule).

Checksums: every file the Checkpointer writes gets a sidecar ``<name>.pth.sha256`` (``sha256sum``
format, computed while the file is written, written atomically after it).
:func:`load_checkpoint_file` -- and so resuming, ``MODEL.WEIGHT``, ``load_trained_model`` and
``MODEL.PRETRAINED_DETECTOR_CKPT`` -- verifies a file that has one (hashing the bytes through the
same open file before ``torch.load`` reads them, ~1 s per GB) and raises
:class:`ChecksumMismatchError` (a :class:`CorruptCheckpointError`, so resuming falls back to the
previous checkpoint) on a mismatch. Files without a sidecar (SGB's, downloaded or copied ones, and
those written before checksums existed) load unverified with an info line.

Everything stored is plain tensors / Python containers, so files load with
``torch.load(weights_only=True)``; files with other objects (old checkpoints) fall back to a full
unpickle, which is only done for files you point the code at.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from sgg.utils import comm
from sgg.utils.io import atomic_torch_save, atomic_write_text, clean_stale_temp_files

from .files import (  # noqa: F401  (re-exported: the names of this module before the split)
    CheckpointError,
    CorruptCheckpointError,
    ChecksumMismatchError,
    get_rng_state,
    set_rng_state,
    restore_rank_rng,
    load_checkpoint_file,
    read_state_dict,
    unwrap_model,
    load_model_state,
)
from .sgb import is_sgb_checkpoint, load_sgb_relation_checkpoint

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
FINAL_NAME = "model_final"
BEST_NAME = "model_best"
_RESUMABLE = re.compile(r"^model_(\d+|final)\.pth$")


# ---------------------------------------------------------------------------------------------
# Checkpointer
# ---------------------------------------------------------------------------------------------
class Checkpointer:
    """Save / load the model and any objects with ``state_dict`` / ``load_state_dict``.

    Args:
        model: the model (a DDP wrapper is unwrapped).
        save_dir: where checkpoints and ``last_checkpoint`` live (usually OUTPUT_DIR).
        cfg: the run's config, stored as YAML in every checkpoint (optional).
        save_to_disk: write files (default: only on the main process).
        **checkpointables: e.g. ``optimizer=..., scheduler=..., scaler=..., ema=...``.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, cfg: Any = None,
                 save_to_disk: Optional[bool] = None, **checkpointables: Any) -> None:
        self.model = unwrap_model(model)
        self.save_dir = save_dir
        self.cfg = cfg
        self.save_to_disk = comm.is_main_process() if save_to_disk is None else save_to_disk
        self.checkpointables: Dict[str, Any] = {k: v for k, v in checkpointables.items() if v is not None}

    def add_checkpointable(self, name: str, obj: Any) -> None:
        if name in ("model", "iteration", "rng_states", "config", "metadata"):
            raise ValueError(f"{name!r} is a reserved checkpoint key")
        self.checkpointables[name] = obj

    # -- paths ------------------------------------------------------------------------------------
    def path_of(self, name: str) -> str:
        return os.path.join(self.save_dir, name if name.endswith(".pth") else name + ".pth")

    def _last_file(self) -> str:
        return os.path.join(self.save_dir, LAST_CHECKPOINT)

    def has_checkpoint(self) -> bool:
        return bool(self.save_dir) and os.path.isfile(self._last_file())

    def get_checkpoint_file(self) -> str:
        """The file named in ``last_checkpoint`` ("" when there is none)."""
        return _read_last_checkpoint(self.save_dir)

    def tag_last_checkpoint(self, filename: str) -> None:
        if self.save_to_disk:
            atomic_write_text(self._last_file(), os.path.basename(filename) + "\n")

    def clean_stale_temp_files(self) -> List[str]:
        """Remove the temporary files that killed writes left in save_dir (only where this
        Checkpointer writes, i.e. rank 0; the liveness rule is
        :func:`sgg.utils.io.clean_stale_temp_files`'s). Returns the removed paths."""
        if not (self.save_to_disk and self.save_dir):
            return []
        return clean_stale_temp_files(self.save_dir)

    # -- saving -----------------------------------------------------------------------------------
    def save(self, name: str, **extra: Any) -> Optional[str]:
        """Write a full checkpoint ``<save_dir>/<name>.pth`` atomically with its
        ``<name>.pth.sha256``, and tag it in ``last_checkpoint``; returns the path (None on ranks
        that do not write). Stale temporary files of save_dir are removed first.

        ``extra`` is stored as is (e.g. ``iteration=...``). When it has no ``rng_states`` the RNG
        state of this process is stored (the trainer passes every rank's).
        """
        if not self.save_to_disk or not self.save_dir:
            return None
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.cfg is not None and "config" not in extra:
            data["config"] = self.cfg.dump() if hasattr(self.cfg, "dump") else str(self.cfg)
        if getattr(self.model, "metadata", None) is not None and "metadata" not in extra:
            data["metadata"] = dict(self.model.metadata)
        if "rng_states" not in extra:
            data["rng_states"] = [get_rng_state()]
        data.update(extra)
        path = self.path_of(name)
        self.clean_stale_temp_files()
        atomic_torch_save(data, path, checksum=True)
        self.tag_last_checkpoint(path)
        logger.info("saved checkpoint %s", path)
        return path

    def save_model(self, name: str, state_dict: Optional[Mapping[str, torch.Tensor]] = None,
                   **extra: Any) -> Optional[str]:
        """Write weights only (``{"model": ..., **extra}``), atomically with a ``.sha256`` sidecar,
        without touching ``last_checkpoint`` (used for ``model_best.pth``)."""
        if not self.save_to_disk or not self.save_dir:
            return None
        data = {"model": dict(state_dict) if state_dict is not None else self.model.state_dict()}
        if self.cfg is not None and "config" not in extra:
            data["config"] = self.cfg.dump() if hasattr(self.cfg, "dump") else str(self.cfg)
        if getattr(self.model, "metadata", None) is not None and "metadata" not in extra:
            data["metadata"] = dict(self.model.metadata)
        data.update(extra)
        path = self.path_of(name)
        self.clean_stale_temp_files()
        atomic_torch_save(data, path, checksum=True)
        logger.info("saved %s", path)
        return path

    # -- loading ----------------------------------------------------------------------------------
    def resolve(self, path: str) -> str:
        """A directory means the checkpoint named in its ``last_checkpoint``."""
        if os.path.isdir(path):
            name = _read_last_checkpoint(path)
            if not name:
                raise FileNotFoundError(f"{path} is a directory without a '{LAST_CHECKPOINT}' file; "
                                        f"pass a checkpoint file instead")
            return name
        return path

    def load(self, path: str, *, model_only: bool = False, restore_rng: bool = False,
             load_mapping: Optional[Mapping[str, str]] = None, prefer_ema: bool = False,
             allow_unplaced: bool = False) -> Dict[str, Any]:
        """Load ``path`` (a file, or a directory -> its last checkpoint).

        Loads the model and, unless ``model_only``, every checkpointable present in the file.
        With ``prefer_ema`` (evaluation) the model gets the EMA weights when the file has them
        (``SOLVER.EMA_DECAY`` > 0: the weights validation used), else its ``model`` weights.
        Returns what is left of the file (``iteration``, ``rng_states``, extras) plus ``path`` and
        ``restored`` (names of the checkpointables restored). With ``restore_rng`` this rank's RNG
        state is restored too. A Scene-Graph-Benchmark / PE-Net file (maskrcnn_benchmark names) is
        converted and loaded strictly by :func:`~sgg.checkpoint.sgb.load_sgb_relation_checkpoint`:
        its tensors without a place in the model are an error unless ``allow_unplaced``, model
        tensors it lacks always are.
        """
        path = self.resolve(path)
        logger.info("loading checkpoint %s%s", path, " (model weights only)" if model_only else "")
        ckpt = load_checkpoint_file(path)
        if "model" not in ckpt:
            raise CheckpointError(f"checkpoint {path} has no 'model' entry (keys: {sorted(ckpt)})")
        weights = ckpt.pop("model")
        ema = ckpt.get("ema")
        if prefer_ema and isinstance(ema, Mapping) and "model" in ema:
            logger.info("using the EMA weights of %s (%d updates)", path, int(ema.get("updates", 0)))
            weights = ema["model"]
        if is_sgb_checkpoint(weights):  # a Scene-Graph-Benchmark / PE-Net file: maskrcnn_benchmark names
            load_sgb_relation_checkpoint(self.model, weights, f"SGB checkpoint '{path}'",
                                         allow_unplaced=allow_unplaced)
        else:
            load_model_state(self.model, weights, load_mapping=load_mapping, source=path)
        if model_only:
            return {}
        restored = []
        for key, obj in self.checkpointables.items():
            if key not in ckpt:
                logger.warning("checkpoint %s has no '%s' state; keeping the current one", path, key)
                continue
            state = ckpt.pop(key)
            if isinstance(state, Mapping) and len(state) == 0:
                continue  # e.g. a disabled GradScaler saves {}
            try:
                obj.load_state_dict(state)
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(f"cannot restore '{key}' from {path}: {type(e).__name__}: {e}") from e
            restored.append(key)
        if restore_rng:
            restore_rank_rng(ckpt.get("rng_states"))
        ckpt["path"] = path
        ckpt["restored"] = restored
        return ckpt

    def _resume_candidates(self) -> List[str]:
        """The tagged checkpoint first, then older resumable files of save_dir, newest first."""
        tagged = self.get_checkpoint_file()
        out = [tagged] if tagged else []

        def number(fname: str) -> float:
            m = _RESUMABLE.match(os.path.basename(fname))
            if not m:
                return float("inf")
            return float("inf") if m.group(1) == "final" else float(m.group(1))

        limit = number(tagged) if tagged else float("inf")
        others = []
        for fname in os.listdir(self.save_dir):
            full = os.path.join(self.save_dir, fname)
            if _RESUMABLE.match(fname) and os.path.abspath(full) != os.path.abspath(tagged or ""):
                if number(fname) < limit or limit == float("inf"):
                    others.append(full)
        others.sort(key=number, reverse=True)
        return out + others

    def resume_or_load(self, path: Optional[str] = "", *, resume: bool = True,
                       restore_rng: bool = True) -> Dict[str, Any]:
        """With ``resume`` and a ``last_checkpoint`` in save_dir: load that checkpoint fully (when
        it is corrupt -- unreadable or not matching its checksum -- or missing, fall back to the
        newest older complete one and say so). Otherwise load only the model weights from ``path``
        (if given) and return ``{}``. First, on the writing rank, stale temporary files of killed
        writes are removed from save_dir."""
        self.clean_stale_temp_files()
        if resume and self.has_checkpoint():
            errors = []
            for cand in self._resume_candidates():
                try:
                    out = self.load(cand, restore_rng=restore_rng)
                except (CorruptCheckpointError, FileNotFoundError) as e:
                    logger.error("cannot resume from %s: %s", cand, e)
                    errors.append(f"{cand}: {e}")
                    continue
                if errors:
                    logger.warning("resumed from the previous complete checkpoint %s instead", cand)
                return out
            raise CheckpointError("no readable checkpoint to resume from in "
                                  f"{self.save_dir}:\n" + "\n".join(errors))
        if path:
            self.load(path, model_only=True)
        return {}


def _read_last_checkpoint(save_dir: str) -> str:
    last = os.path.join(save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(last):
        return ""
    with open(last, "r") as f:
        name = f.read().strip()
    if not name:
        return ""
    if os.path.isabs(name) and os.path.exists(name):
        return name  # SGB wrote absolute paths
    return os.path.join(save_dir, os.path.basename(name))
