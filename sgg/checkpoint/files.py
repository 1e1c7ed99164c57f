"""Reading checkpoint files: verified loading (checksum sidecars), state dicts out of any file
layout, loading a state dict into a model with clear errors, and the per-rank RNG state a
checkpoint carries. :mod:`.checkpointer` (saving, resuming) and :mod:`.sgb` (Scene-Graph-Benchmark
files) build on it; the module docstring of :mod:`.checkpointer` describes the file format.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from sgg.utils import comm
from sgg.utils.io import checksum_path, read_checksum, sha256_of_file

logger = logging.getLogger(__name__)


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
