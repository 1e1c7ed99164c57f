"""GloVe word vectors for class-name embeddings (the Motifs object embeddings).

Two file formats are read from ``glove_dir`` (never downloaded):

* ``glove.6B.{dim}d.pt``: SGB's cache, ``torch.save((wv_dict, wv_arr, wv_size))`` with ``wv_dict``
  word -> row, ``wv_arr`` FloatTensor ``[V, dim]``, ``wv_size`` = dim. Preferred when present (as in
  SGB), since it loads in a second.
* ``glove.6B.{dim}d.txt``: one word per line followed by ``dim`` floats, space separated. Only the
  lines of the words we need are parsed, so reading the 400k-word file takes seconds, not minutes.

A class name found verbatim gets its vector; otherwise (e.g. ``"traffic light"``,
``"tennis_racket"``) the average of the vectors of its words (split on spaces/underscores) that are
in the vocabulary; otherwise a random normal vector. Special tokens (``__background__``) always get
the random vector (SGB splits names on spaces only, so it never found one for them). (SGB used the longest word only; the average is
what specs/compat.md asks for.)

Without a file, every vector is drawn from N(0, 1) with a ``torch.Generator`` seeded from
:data:`RANDOM_SEED` and the name (CRC32), so the initialisation is identical run to run and does
not depend on the global RNG, and ONE warning names ``GLOVE_DIR`` and the expected file. Names
missing from a vocabulary get the same seeded vector.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch

from sgg.utils.io import atomic_torch_save

logger = logging.getLogger(__name__)

__all__ = ["RANDOM_SEED", "glove_file_candidates", "load_word_vectors", "random_word_vectors", "read_glove"]

#: Seed of the generator used for every random vector (missing file or out-of-vocabulary name).
RANDOM_SEED = 0


def glove_file_candidates(glove_dir: str, dim: int = 200, wv_type: str = "glove.6B") -> Tuple[str, str]:
    """The two files looked for, in order of preference: (``.pt`` cache, ``.txt``)."""
    base = os.path.join(glove_dir, f"{wv_type}.{dim}d")
    return base + ".pt", base + ".txt"


def _random_vector(name: str, dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(RANDOM_SEED * 1_000_003 + zlib.crc32(name.encode("utf-8")))
    return torch.randn(dim, generator=gen)


def random_word_vectors(names: Sequence[str], dim: int) -> torch.Tensor:
    """``[len(names), dim]`` seeded N(0, 1) vectors, one generator per name (seed :data:`RANDOM_SEED`
    and the name's CRC32): the same vector for a name whatever the other names, their order or the
    global RNG. What a model starts from when no GloVe file is read; reads nothing."""
    names = [str(n) for n in names]
    return torch.stack([_random_vector(n, dim) for n in names]) if names else torch.zeros(0, dim)


def _is_special(name: str) -> bool:
    """A special token such as ``__background__`` (not a word: never looked up in GloVe)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _words_of(name: str) -> List[str]:
    return [w for w in re.split(r"[ _]+", name.strip()) if w]


def _wanted_words(names: Iterable[str]) -> Set[str]:
    wanted: Set[str] = set()
    for n in names:
        for form in (n, n.lower()):
            wanted.add(form)
            wanted.update(_words_of(form))
    return wanted


def _read_txt(path: str, dim: int, wanted: Optional[Set[str]]) -> Dict[str, torch.Tensor]:
    """Vectors of the ``wanted`` words (all words if None) from a GloVe text file."""
    out: Dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        for line in f:
            sp = line.find(b" ")
            if sp <= 0:
                continue
            try:
                word = line[:sp].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if wanted is not None and word not in wanted:
                continue
            vals = line[sp + 1:].split()
            if len(vals) != dim:
                raise ValueError(f"{path}: the vector of '{word}' has {len(vals)} values, expected {dim}")
            out.setdefault(word, torch.tensor([float(v) for v in vals], dtype=torch.float32))
    return out


def _read_pt(path: str, dim: int, wanted: Optional[Set[str]]) -> Dict[str, torch.Tensor]:
    """Vectors from SGB's ``(wv_dict, wv_arr, wv_size)`` cache."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which and why
        raise RuntimeError(f"cannot read the GloVe cache {path}: {e}") from e
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise RuntimeError(f"{path}: expected the SGB cache (wv_dict, wv_arr, wv_size), got {type(obj).__name__}")
    wv_dict, wv_arr, wv_size = obj
    wv_arr = torch.as_tensor(wv_arr, dtype=torch.float32)
    if int(wv_size) != dim or wv_arr.dim() != 2 or wv_arr.shape[1] != dim:
        raise RuntimeError(f"{path}: vectors have size {wv_size} / shape {tuple(wv_arr.shape)}, expected {dim}")
    words = wv_dict.keys() if wanted is None else (w for w in wanted if w in wv_dict)
    return {w: wv_arr[int(wv_dict[w])].clone() for w in words}


def read_glove(glove_dir: str, dim: int = 200, words: Optional[Iterable[str]] = None,
               wv_type: str = "glove.6B") -> Optional[Dict[str, torch.Tensor]]:
    """word -> FloatTensor[dim] for ``words`` (all if None) from ``glove_dir``; None if no file."""
    pt, txt = glove_file_candidates(glove_dir, dim, wv_type)
    wanted = None if words is None else set(words)
    if os.path.isfile(pt):
        logger.info("loading word vectors from %s", pt)
        return _read_pt(pt, dim, wanted)
    if os.path.isfile(txt):
        logger.info("loading word vectors from %s", txt)
        return _read_txt(txt, dim, wanted)
    return None


def _cache_path(cache_dir: str, names: Sequence[str], dim: int) -> str:
    key = hashlib.sha1(("\n".join(names) + f"|{dim}").encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_dir, f"word_vectors_{dim}d_{key}.pt")


def load_word_vectors(names: Sequence[str], glove_dir: Optional[str], dim: int = 200,
                      cache_dir: Optional[str] = None, wv_type: str = "glove.6B") -> torch.Tensor:
    """One embedding row per class name -> FloatTensor ``[len(names), dim]``.

    Args:
        names: class names (e.g. ``["__background__", "airplane", ...]``).
        glove_dir: folder with ``glove.6B.{dim}d.pt`` or ``.txt`` (config ``GLOVE_DIR``); None or a
            folder without either file -> seeded random vectors and one warning.
        dim: vector size (config ``MODEL.ROI_RELATION_HEAD.EMBED_DIM``, 200 in SGB).
        cache_dir: if given, the result for exactly these names is stored there (and read back
            on the next call), so later runs need not read GloVe at all. Nothing is written
            otherwise.
    """
    names = [str(n) for n in names]
    if cache_dir:
        cpath = _cache_path(cache_dir, names, dim)
        if os.path.isfile(cpath):
            obj = torch.load(cpath, map_location="cpu", weights_only=True)
            if list(obj.get("names", [])) == names and tuple(obj["vectors"].shape) == (len(names), dim):
                return obj["vectors"].clone()

    # Fallback rows are drawn up front from a generator seeded per name, so a class gets the
    # same random vector whatever the other names, their order, or the global RNG state.
    vectors = random_word_vectors(names, dim)

    table = read_glove(glove_dir, dim, _wanted_words(names), wv_type) if glove_dir else None
    if table is None:
        pt, txt = glove_file_candidates(glove_dir or "<GLOVE_DIR>", dim, wv_type)
        logger.warning(
            "GloVe vectors not found: GLOVE_DIR=%r has neither %s nor %s. Class embeddings start "
            "from seeded random vectors (seed %d) instead; results will differ from GloVe-initialised "
            "runs. Put glove.6B.%dd.txt (or SGB's .pt cache) in GLOVE_DIR to use GloVe.",
            glove_dir, os.path.basename(pt), os.path.basename(txt), RANDOM_SEED, dim,
        )
    else:
        missing = []
        for i, name in enumerate(names):
            if _is_special(name):  # "__background__": a seeded random vector, as SGB / PE-Net
                continue
            vec = table.get(name, table.get(name.lower()))
            if vec is None:
                parts = [table.get(w, table.get(w.lower())) for w in _words_of(name)]
                parts = [p for p in parts if p is not None]
                if parts:
                    vec = torch.stack(parts).mean(0)
            if vec is None:
                missing.append(name)
            else:
                vectors[i] = vec
        if missing:
            logger.info("%d class names not in the GloVe vocabulary (random vectors): %s",
                        len(missing), ", ".join(missing))

    if cache_dir:
        from sgg.utils import comm

        if comm.is_main_process():
            os.makedirs(cache_dir, exist_ok=True)
            atomic_torch_save({"names": names, "vectors": vectors}, _cache_path(cache_dir, names, dim))
    return vectors
