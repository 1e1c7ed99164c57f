"""Atomic file writes: the one place that writes a temporary file next to the target and renames it.

Every file the project writes that a crash must not leave half-written (checkpoints,
``last_checkpoint``, statistics caches, predictions, reports, depth encodings, word-vector caches)
goes through :func:`atomic_write`: the data goes to a temporary file in the same directory, is
flushed and fsync'ed, then ``os.replace``'d onto the final name, so a crash mid-write leaves the
previous file untouched (and the temporary file is removed on any Python-level error).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_torch_save", "atomic_numpy_save"]


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and Windows) cannot fsync a directory
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write_fn: Callable[[Any], None]) -> None:
    """Call ``write_fn(binary_file)`` on a temp file next to ``path``, fsync, then rename onto ``path``.

    On any error the temp file is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> None:
    """UTF-8 ``text`` to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_numpy_save(path: str, array: Any) -> None:
    """``np.save(array)`` to ``path`` (the exact name, no ``.npy`` appended), atomically."""
    import numpy as np

    atomic_write(path, lambda f: np.save(f, array))
