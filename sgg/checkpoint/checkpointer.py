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
import pickle
import random
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from sgg.utils import comm
from sgg.utils.io import (
    atomic_torch_save,
    atomic_write_text,
    checksum_path,
    clean_stale_temp_files,
    read_checksum,
    sha256_of_file,
)

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
FINAL_NAME = "model_final"
BEST_NAME = "model_best"
_RESUMABLE = re.compile(r"^model_(\d+|final)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model (message names file / keys)."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated or otherwise unreadable (the message names it)."""


class ChecksumMismatchError(CorruptCheckpointError):
    """The file's SHA-256 differs from its ``.sha256`` sidecar (the message names the file and
    both digests); ``path``, ``expected`` and ``actual`` hold them."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        side = checksum_path(path)
        super().__init__(
            f"checksum mismatch for checkpoint {path}: expected sha256 {expected} (recorded in {side} when it "
            f"was written), actual sha256 {actual}. The file is corrupt, truncated or corrupted since it was "
            f"written (a failing disk, an interrupted or damaged copy): delete it and resume from the previous "
            f"checkpoint, or re-copy it from its source. (If you replaced the file on purpose, delete the stale "
            f"{side}.)")
        self.path, self.expected, self.actual = path, expected, actual


# ---------------------------------------------------------------------------------------------
# RNG state
# ---------------------------------------------------------------------------------------------
def get_rng_state() -> Dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, current CUDA device if initialised)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state as tensors / ints so the file loads with weights_only=True
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def restore_rank_rng(states: Optional[Sequence[Mapping[str, Any]]]) -> bool:
    """Restore this rank's entry of a per-rank list of RNG states; returns whether it did."""
    if not states:
        return False
    rank, world = comm.get_rank(), comm.get_world_size()
    if len(states) != world:
        if rank >= len(states):
            logger.warning("checkpoint has RNG states of %d ranks, this run has %d: rank %d keeps its fresh "
                           "seed (the continuation is not bit-identical to an uninterrupted run)",
                           len(states), world, rank)
            return False
        logger.warning("checkpoint has RNG states of %d ranks, this run has %d: the continuation is not "
                       "bit-identical to an uninterrupted run", len(states), world)
    set_rng_state(states[rank])
    return True


# ---------------------------------------------------------------------------------------------
# Reading files and loading model weights
# ---------------------------------------------------------------------------------------------
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def _expected_digest(path: str) -> Optional[str]:
    try:
        expected = read_checksum(path)
    except (ValueError, OSError) as e:
        logger.warning("%s: loading %s without verifying it", e, path)
        return None
    if expected is None:
        logger.info("%s has no checksum file (%s): loading it unverified", path,
                    os.path.basename(checksum_path(path)))
    return expected


def _open_verified(path: str, attempts: int = 3):
    """``path`` opened for reading at offset 0, after checking it against its sidecar (if any).

    The file is opened before the sidecar is read: a writer replacing both meanwhile (e.g.
    ``model_best.pth`` during an evaluation) can pair the old file with the new digest; then the
    name points at another file than the one opened and it is read again."""
    for attempt in range(attempts):
        f = open(path, "rb")
        try:
            expected = _expected_digest(path)
            if expected is None:
                return f
            actual = sha256_of_file(f)
            if actual == expected:
                logger.debug("%s matches its sha256 %s", path, expected)
                f.seek(0)
                return f
            opened = os.fstat(f.fileno())
            try:
                now = os.stat(path)
                replaced = (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev)
            except FileNotFoundError:
                replaced = False
            if not replaced or attempt == attempts - 1:
                raise ChecksumMismatchError(path, expected, actual)
            logger.info("%s was replaced while it was read; reading it again", path)
        except BaseException:
            f.close()
            raise
        f.close()
    raise AssertionError("unreachable")


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU. A bare state dict comes back as ``{"model": state_dict}``.

    A file with a ``<path>.sha256`` sidecar (every file the Checkpointer writes) is verified first:
    the file is opened once, hashed, and ``torch.load`` reads the same open file (from the page
    cache), so the bytes checked are the bytes loaded.

    Raises FileNotFoundError for a missing file, :class:`ChecksumMismatchError` naming the file and
    both digests when it does not match its sidecar, and :class:`CorruptCheckpointError` naming the
    file when it is truncated or otherwise unreadable.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    with _open_verified(path) as f:
        try:
            try:
                obj = torch.load(f, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                if "weights_only" not in str(e) and "Weights only" not in str(e):
                    raise
                # Not a file of ours (e.g. an SGB checkpoint with pickled objects): full unpickle.
                logger.info("%s holds objects beyond tensors; loading it with weights_only=False", path)
                f.seek(0)
                obj = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - every reader error means the same thing to the user
            size = os.fstat(f.fileno()).st_size
            raise CorruptCheckpointError(
                f"cannot read checkpoint {path} ({size} bytes): the file is truncated or corrupted "
                f"({type(e).__name__}: {e}). Delete it or point to another checkpoint."
            ) from e
    if _is_state_dict(obj):
        return {"model": obj}
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def read_state_dict(path: str, key: str = "") -> Dict[str, torch.Tensor]:
    """Read a local weight file: a bare state dict or one under ``"model"`` / ``"state_dict"``.

    A leading ``module.`` (DataParallel / DDP) is stripped. Nothing is ever downloaded. ``key``
    names the setting in the error for a missing file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weight file not found: '{path}'{f' ({key})' if key else ''}. Weights are read from local files "
            f"only; set {key or 'the config key (e.g. MODEL.BACKBONE.WEIGHTS)'} to an existing file or to '' "
            f"for random init.")
    obj = load_checkpoint_file(path)
    state = obj.get("model", obj.get("state_dict"))
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' holds no state dict (top-level keys: {sorted(obj)[:10]})")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                     load_mapping: Optional[Mapping[str, str]] = None,
                     source: str = "checkpoint") -> Tuple[List[str], List[str]]:
    """Load ``state_dict`` into ``model`` (non-strict) and return ``(missing, unexpected)`` keys.

    * keys prefixed ``module.`` (saved from a DDP-wrapped model) are accepted;
    * ``load_mapping`` ``{src_prefix: dst_prefix}`` additionally copies every ``src_prefix*`` entry
      to ``dst_prefix*`` where the model has no such entry in the file (SGB's ``load_mapping``,
      used to initialise the relation head's own box-feature copy from the detector);
    * a shape mismatch is an error naming every such key with both shapes;
    * missing / unexpected keys are logged.
    """
    model = unwrap_model(model)
    own = model.state_dict()
    sd = dict(state_dict)
    if any(k.startswith("module.") for k in sd) and not any(k.startswith("module.") for k in own):
        sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    for src, dst in (load_mapping or {}).items():
        for k in list(sd):
            if k.startswith(src):
                new = dst + k[len(src):]
                if new not in sd and new in own:
                    sd[new] = sd[k]
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items()
                  if k in own and torch.is_tensor(v) and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        lines = "\n".join(f"  {k}: {source} has shape {a}, model has shape {b}" for k, a, b in mismatched)
        raise CheckpointError(f"shape mismatch loading {source} into {type(model).__name__} "
                              f"({len(mismatched)} keys):\n{lines}")
    result = model.load_state_dict(sd, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)

    def _show(keys: List[str]) -> str:
        return ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")

    if missing:
        logger.warning("%d keys of the model are not in %s (left as initialised): %s",
                       len(missing), source, _show(missing))
    if unexpected:
        logger.warning("%d keys of %s are not in the model (ignored): %s", len(unexpected), source,
                       _show(unexpected))
    if not missing and not unexpected:
        logger.info("loaded all %d model tensors from %s", len(own), source)
    return missing, unexpected


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
             load_mapping: Optional[Mapping[str, str]] = None, prefer_ema: bool = False) -> Dict[str, Any]:
        """Load ``path`` (a file, or a directory -> its last checkpoint).

        Loads the model and, unless ``model_only``, every checkpointable present in the file.
        With ``prefer_ema`` (evaluation) the model gets the EMA weights when the file has them
        (``SOLVER.EMA_DECAY`` > 0: the weights validation used), else its ``model`` weights.
        Returns what is left of the file (``iteration``, ``rng_states``, extras) plus ``path`` and
        ``restored`` (names of the checkpointables restored). With ``restore_rng`` this rank's RNG
        state is restored too.
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
        from .sgb import format_report, is_sgb_checkpoint, sgb_to_sgg_state_dict  # sgb imports this module

        if is_sgb_checkpoint(weights):  # a Scene-Graph-Benchmark / PE-Net file: maskrcnn_benchmark names
            weights, report = sgb_to_sgg_state_dict(
                OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in weights.items()),
                self.model.state_dict())
            logger.info("%s", format_report(report, f"SGB checkpoint '{path}'"))
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
