"""Logging setup: rank 0 logs INFO to stdout (and a file); other ranks only WARNING+."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from .comm import get_rank

_FMT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logger(output_dir: Optional[str] = None, name: str = "sgg", rank: Optional[int] = None) -> logging.Logger:
    """Configure the ``sgg`` logger once per process and return it.

    Non-main ranks are quiet (WARNING and above). When ``output_dir`` is given, rank 0 also
    writes ``log.txt`` there and rank r>0 writes ``log_rank{r}.txt``.
    """
    rank = get_rank() if rank is None else rank
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fmt = logging.Formatter(_FMT, datefmt="%m/%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log_rank{rank}.txt"
        fh = logging.FileHandler(os.path.join(output_dir, fname))
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
