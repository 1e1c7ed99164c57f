"""Atomic file writes: the one place that writes a temporary file next to the target and renames it.

Every file the project writes that a crash must not leave half-written (checkpoints,
``last_checkpoint``, statistics caches, predictions, reports, depth encodings, word-vector caches)
goes through :func:`atomic_write`: the data goes to a temporary file in the same directory, is
flushed and fsync'ed, then ``os.replace``'d onto the final name, so a crash mid-write leaves the
previous file untouched (and the temporary file is removed on any Python-level error).

Temporary files
---------------
A process killed mid-write (SIGKILL, OOM killer, power loss) cannot remove its temporary file.
Each one is therefore named after its writer::

    .<target name>.<pid>-<start>@<host>.<random>.tmp      e.g. .model_0000300.pth.4242-8812345@node01.k2j4x_9a.tmp

(``<start>``: the process's start time in clock ticks since boot from ``/proc/<pid>/stat``, 0
where there is no ``/proc``; ``<host>``: the host name with characters other than letters, digits,
``-`` and ``_`` replaced by ``_``). :func:`clean_stale_temp_files` removes the ones no live write
owns; the :class:`~sgg.checkpoint.Checkpointer` calls it on its directory (``OUTPUT_DIR``) when a
training run starts and before each checkpoint it writes. The liveness rule:

* written on this host: stale when process ``<pid>`` no longer runs (``os.kill(pid, 0)`` fails, or
  it is a zombie), or when a process with that pid runs but started at another time than
  ``<start>`` (the pid was reused: in a restarted container the new trainer often gets the dead
  one's pid, even this very process). A file of a live writer (this process's other threads,
  another rank on this node) is never removed.
* written on another host (a shared filesystem; a run requeued on another node): its pid means
  nothing here, so the file is stale only when it has not been modified for ``max_age`` seconds
  (default one hour; a live write modifies its file continually, and the final fsync of even a
  ~1 GB checkpoint takes far less).
* ``.<name>.<8 characters>.tmp`` files of earlier versions (no pid): the same age rule.

Under ``torchrun`` only rank 0 writes checkpoints and only rank 0's Checkpointer cleans; the other
ranks' files (if any land in the same directory) are those of live processes on its host or are
younger than ``max_age`` on other hosts, so they are kept.

Checksums
---------
``atomic_write(..., checksum=True)`` (used for checkpoints) also stores the SHA-256 of the bytes
written, computed while they are written, in a sidecar ``<path>.sha256`` in ``sha256sum`` format
(``sha256sum -c model_0000300.pth.sha256`` checks it). The old sidecar is removed before the new
file replaces the old one and the new sidecar is written atomically after it, so a kill in between
leaves a complete file without a sidecar (loaded unverified), never a sidecar that does not match
its complete file. :func:`read_checksum` and :func:`sha256_of_file` are the read side.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import stat
import tempfile
import time
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple

__all__ = [
    "CHECKSUM_SUFFIX",
    "atomic_numpy_save",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "checksum_path",
    "clean_stale_temp_files",
    "read_checksum",
    "sha256_of_file",
    "temp_file_prefix",
]

logger = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"
#: default age after which a temporary file whose writer cannot be checked counts as stale
STALE_TEMP_MAX_AGE = 3600.0

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<start>\d+)@(?P<host>[A-Za-z0-9_-]*)"
                        r"\.(?P<rand>[A-Za-z0-9_]+)\.tmp$")
# tempfile.mkstemp's 8 random characters, as atomic_write named its files before the pid was added
_LEGACY_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Who writes a temporary file
# ---------------------------------------------------------------------------------------------
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32]


def _proc_stat(pid: int) -> Optional[Tuple[str, int]]:
    """(state letter, start time in clock ticks since boot) of ``pid`` from /proc, None without."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


_own_start: Dict[int, int] = {}


def _own_start_time() -> int:
    pid = os.getpid()  # per pid: a forked child is another writer
    if pid not in _own_start:
        st = _proc_stat(pid)
        _own_start[pid] = st[1] if st else 0
    return _own_start[pid]


def temp_file_prefix(path: str) -> str:
    """The name start of :func:`atomic_write`'s temporary files for ``path`` in this process
    (``.<name>.<pid>-<start>@<host>.``; mkstemp appends random characters and ``.tmp``)."""
    base = os.path.basename(path)[:120]  # the target part is informative only; stay under NAME_MAX
    return f".{base}.{os.getpid()}-{_own_start_time()}@{_host()}."


def _pid_state(pid: int, start: int) -> Tuple[bool, str]:
    """(alive, why not) of the writer ``pid`` with start token ``start`` on this host."""
    if pid == os.getpid():
        own = _own_start_time()
        if start and own and start != own:
            return False, f"written by an earlier process with this process's pid {pid}"
        return True, ""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: cannot check
        return True, ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"its writer, process {pid}, is no longer running"
    except PermissionError:
        pass  # exists, owned by another user
    except (OverflowError, ValueError):
        return False, f"no process can have pid {pid}"
    except OSError:
        return True, ""
    st = _proc_stat(pid)
    if st is not None:
        state, started = st
        if state in ("Z", "X"):
            return False, f"its writer, process {pid}, has ended"
        if start and started != start:
            return False, f"its writer, process {pid}, has ended (the pid now belongs to another process)"
    return True, ""


def clean_stale_temp_files(directory: str, *, max_age: float = STALE_TEMP_MAX_AGE) -> List[str]:
    """Remove the temporary files of :func:`atomic_write` in ``directory`` that no live write owns
    (the liveness rule is in the module docstring), logging each; returns the removed paths.

    Only regular files whose names follow the temporary-file pattern are considered; a missing
    directory is no error.
    """
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    host, now, removed = _host(), time.time(), []
    for name in names:
        if not name.endswith(".tmp"):
            continue
        m = _TEMP_NAME.match(name)
        if m is None and _LEGACY_TEMP_NAME.match(name) is None:
            continue
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # renamed onto its target meanwhile
        if not stat.S_ISREG(st.st_mode):
            continue
        age = now - st.st_mtime
        if m is not None and m.group("host") == host:
            alive, why = _pid_state(int(m.group("pid")), int(m.group("start")))
            if alive:
                continue
        elif age > max_age:
            where = f"written on host {m.group('host')}" if m is not None else "written by an earlier version"
            why = f"{where}, unmodified for {age / 3600:.1f} h"
        else:
            continue
        try:
            os.unlink(full)
        except FileNotFoundError:
            continue
        except OSError as e:
            logger.warning("cannot remove the stale temporary file %s: %s", full, e)
            continue
        logger.warning("removed the stale temporary file %s (%d bytes) of an interrupted write: %s",
                       full, st.st_size, why)
        removed.append(full)
    return removed


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------
def checksum_path(path: str) -> str:
    """The SHA-256 sidecar of ``path``: ``<path>.sha256``."""
    return path + CHECKSUM_SUFFIX


def read_checksum(path: str) -> Optional[str]:
    """The SHA-256 (lower-case hex) recorded for ``path`` in its sidecar; None when there is none.

    Raises ValueError naming the sidecar when it holds no digest."""
    side = checksum_path(path)
    try:
        with open(side, "r", encoding="utf-8", errors="replace") as f:
            text = f.read(4096)
    except FileNotFoundError:
        return None
    token = text.split()[0] if text.split() else ""
    if not _HEX64.match(token):
        raise ValueError(f"checksum file {side} holds no SHA-256 digest ({text[:80]!r})")
    return token.lower()


def sha256_of_file(f: BinaryIO) -> str:
    """SHA-256 hex digest of what is left of the open binary file ``f`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(view[:n])
    return h.hexdigest()


class _HashingWriter:
    """A write-only stream that hashes what passes through it (only ``write``/``flush``/``tell``:
    a writer that seeks fails loudly instead of producing a wrong digest)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.count += len(view)
        self._f.write(view)
        return len(view)

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self.count

    def writable(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------
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


def atomic_write(path: str, write_fn: Callable[[Any], None], *, checksum: bool = False) -> Optional[str]:
    """Call ``write_fn(binary_file)`` on a temp file next to ``path``, fsync, then rename onto ``path``.

    On any error the temp file is removed and ``path`` is left as it was. The temp file is named
    ``.<name>.<pid>-<start>@<host>.<random>.tmp`` (see :func:`clean_stale_temp_files`).

    With ``checksum`` the SHA-256 of the bytes written (hashed as they are written) is stored in
    ``<path>.sha256`` (module docstring) and returned; otherwise None is returned.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_file_prefix(path), suffix=".tmp", dir=directory)
    digest = None
    try:
        with os.fdopen(fd, "wb") as f:
            if checksum:
                hashing = _HashingWriter(f)
                write_fn(hashing)
                f.flush()
                digest = hashing.hash.hexdigest()
                if hashing.count != os.fstat(f.fileno()).st_size:  # the writer went around the stream
                    with open(tmp, "rb") as r:
                        digest = sha256_of_file(r)
            else:
                write_fn(f)
                f.flush()
            os.fsync(f.fileno())
        if checksum:
            try:  # never leave an old digest beside a new file (a kill before the new one is written)
                os.unlink(checksum_path(path))
            except FileNotFoundError:
                pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    if digest is not None:
        atomic_write_text(checksum_path(path), f"{digest}  {os.path.basename(path)}\n")
    return digest


def atomic_torch_save(obj: Any, path: str, *, checksum: bool = False) -> Optional[str]:
    """``torch.save(obj)`` to ``path``, atomically; with ``checksum`` also ``<path>.sha256``
    (returns the digest)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), checksum=checksum)


def atomic_write_text(path: str, text: str) -> None:
    """UTF-8 ``text`` to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_numpy_save(path: str, array: Any) -> None:
    """``np.save(array)`` to ``path`` (the exact name, no ``.npy`` appended), atomically."""
    import numpy as np

    atomic_write(path, lambda f: np.save(f, array))
