"""Process setup for the tools: torchrun environment, arguments, config, logging, seeds, device.

Multi-GPU runs use ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); SGB's ``python -m torch.distributed.launch`` commands become::

    torchrun --nproc_per_node=4 tools/relation_train_net.py --config-file X.yaml KEY VALUE ...

The same script runs as a single process with plain ``python``. ``--local_rank`` /
``--local-rank`` is accepted for old launch lines and ignored (``LOCAL_RANK`` comes from the
environment).

Note: this module initialises the process group (``init_process_group`` has to be called by the
launcher); every other collective goes through :mod:`sgg.utils.comm`.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from typing import Optional

import numpy as np
import torch

from sgg.config import load_config
from sgg.utils import comm
from sgg.utils.device import resolve_device
from sgg.utils.io import atomic_write_text
from sgg.utils.logger import setup_logger

logger = logging.getLogger(__name__)


def default_argument_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """``--config-file``, ``--resume/--no-resume`` (default: resume), ``--eval-only``,
    ``--local_rank/--local-rank`` (ignored), and trailing ``KEY VALUE`` config overrides."""
    parser = argparse.ArgumentParser(
        description=description or "sgg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: KEY VALUE pairs after the options, e.g. SOLVER.IMS_PER_BATCH 12 "
               "MODEL.ROI_RELATION_HEAD.USE_GT_BOX True.\nMulti-GPU: torchrun --nproc_per_node=N <script> ...",
    )
    parser.add_argument("--config-file", "--config_file", dest="config_file", default="", metavar="FILE",
                        help="path to the YAML config")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="resume from OUTPUT_DIR/last_checkpoint when it exists (default: yes)")
    parser.add_argument("--eval-only", "--eval_only", dest="eval_only", action="store_true",
                        help="only evaluate the checkpoint")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE [KEY VALUE ...]")
    return parser


init_distributed = comm.init_from_env
shutdown_distributed = comm.shutdown




def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def setup(args: argparse.Namespace):
    """Everything a tool does before building the model; returns the frozen config.

    Joins the process group (torchrun), loads the config (``args.config_file`` + ``args.opts``),
    resolves MODEL.DEVICE (cuda -> cpu with a warning when unavailable) and SEED (< 0: drawn on
    rank 0 and shared), creates OUTPUT_DIR, writes ``OUTPUT_DIR/config.yaml`` (rank 0), sets up
    logging and seeds every rank with ``SEED + rank``.
    """
    init_distributed()
    cfg = load_config(getattr(args, "config_file", "") or None, getattr(args, "opts", None) or [], freeze=False)
    rank = comm.get_rank()
    output_dir = cfg.OUTPUT_DIR
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
    log = setup_logger(output_dir or None, name="sgg")
    log.info("rank %d of %d, local rank %d; python %s, torch %s", rank, comm.get_world_size(),
             int(os.environ.get("LOCAL_RANK", "0")), sys.version.split()[0], torch.__version__)
    log.info("command line: %s", " ".join(sys.argv))
    device = resolve_device(cfg.MODEL.DEVICE)
    if device.type != str(cfg.MODEL.DEVICE).split(":")[0]:
        cfg.MODEL.DEVICE = device.type
    if cfg.SEED < 0:
        cfg.SEED = int(comm.broadcast_object(int.from_bytes(os.urandom(4), "little") >> 1))
        log.info("SEED < 0: drew seed %d", cfg.SEED)
    cfg.freeze()
    if output_dir and comm.is_main_process():
        path = os.path.join(output_dir, "config.yaml")
        atomic_write_text(path, cfg.dump())
        log.info("full config written to %s", path)
    seed = cfg.SEED + rank
    seed_all(seed)
    log.info("seeded python/numpy/torch with SEED + rank = %d + %d = %d", cfg.SEED, rank, seed)
    comm.synchronize()
    return cfg
