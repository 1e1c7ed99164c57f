"""The predictor zoo: train and evaluate predictors x protocols x {plain, HML} on one dataset and
write one comparison table (library side of ``sgg zoo`` / ``tools/zoo.py``).

Each cell is one relation training run (``sgg relation_train_net`` in a subprocess, so a cell that
fails or is killed does not take the others with it) of the base config with
``MODEL.ROI_RELATION_HEAD.PREDICTOR``, the protocol's ``USE_GT_BOX`` / ``USE_GT_OBJECT_LABEL``,
``MODEL.HML.ENABLED`` and ``OUTPUT_DIR <out>/<predictor>-<protocol>-<method>``. A finished cell
leaves ``zoo_cell.json`` (its test metrics and training time) and is not re-run; an unfinished one
resumes from its own last checkpoint. The table (``zoo_table.md``, ``zoo_results.json``) has
R@K, mR@K, F@K, zR@K and the training time of every finished cell, and ``zoo_plot.png`` places each
cell by R@50 and mR@50.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from sgg.protocol import MODES
from sgg.utils.io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "ZooCell", "format_zoo_table", "run_zoo", "zoo_cells"]

#: training methods a zoo cell can use -> the overrides that select them
METHODS = {"plain": ("MODEL.HML.ENABLED", "False"), "hml": ("MODEL.HML.ENABLED", "True")}
CELL_FILE = "zoo_cell.json"
_KS = (20, 50, 100)
_KEPT = [f"{k}@{n}" for k in ("R", "mR", "F", "zR", "ng-R", "ng-mR") for n in _KS]


@dataclass
class ZooCell:
    predictor: str
    protocol: str
    method: str
    metrics: Dict[str, Any] = field(default_factory=dict)
    train_seconds: Optional[float] = None
    status: str = "pending"  # pending | done | failed | skipped (already done)

    @property
    def name(self) -> str:
        return f"{self.predictor}-{self.protocol}-{self.method}"


def zoo_cells(predictors: Sequence[str], protocols: Sequence[str], methods: Sequence[str]) -> List[ZooCell]:
    """Every (predictor, protocol, method) combination, in that nesting order. Unknown protocols or
    methods are errors naming the choices."""
    for p in protocols:
        if p not in MODES:
            raise ValueError(f"unknown protocol {p!r}: choose from {', '.join(MODES)}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    if not predictors:
        raise ValueError("no predictor given")
    return [ZooCell(p, mode, m) for p in predictors for mode in protocols for m in methods]


def cell_overrides(cell: ZooCell, out_dir: str) -> List[str]:
    box, label = cell.protocol != "sgdet", cell.protocol == "predcls"
    return ["MODEL.ROI_RELATION_HEAD.PREDICTOR", cell.predictor,
            "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", str(box), "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", str(label),
            *METHODS[cell.method], "OUTPUT_DIR", os.path.join(out_dir, cell.name)]


def _subprocess_runner(config_file: str, opts: Sequence[str], log_file: str, nproc: int) -> int:
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "sgg",
               "relation_train_net"]
    else:
        cmd = [sys.executable, "-m", "sgg", "relation_train_net"]
    cmd += ["--config-file", config_file, *opts]
    with open(log_file, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def _test_metrics(cell_dir: str, test_split: str) -> Dict[str, Any]:
    path = os.path.join(cell_dir, "inference", test_split, "relation_metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the run ended without test metrics (see {cell_dir}/zoo.log)")
    with open(path) as f:
        m = json.load(f)
    return {k: m[k] for k in _KEPT if k in m}


def run_zoo(config_file: str, out_dir: str, predictors: Sequence[str], protocols: Sequence[str] = ("predcls",),
            methods: Sequence[str] = ("plain",), opts: Sequence[str] = (), test_split: Optional[str] = None,
            nproc: int = 1, runner: Optional[Callable[[str, Sequence[str], str, int], int]] = None,
            keep_going: bool = True, baseline: bool = True) -> List[ZooCell]:
    """Run every cell not finished yet (module docstring); returns the cells with their metrics.

    ``opts``: overrides for every cell (``KEY VALUE ...``). ``test_split``: the split whose metrics
    the table reports (default: the config's first DATASETS.TEST). ``runner(config_file, opts,
    log_file, nproc) -> exit code`` runs one training (default: a ``sgg relation_train_net``
    subprocess). A failed cell is reported and, with ``keep_going``, the next one runs. With
    ``baseline`` and PredCls among the protocols, the table ends with the frequency prior on the
    same split (:func:`frequency_prior_cell`)."""
    from sgg.config import load_config

    cfg = load_config(config_file, list(opts))
    test_split = test_split or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if not test_split:
        raise ValueError(f"{config_file}: DATASETS.TEST is empty; the zoo reports test metrics")
    runner = runner or _subprocess_runner
    os.makedirs(out_dir, exist_ok=True)
    cells = zoo_cells(predictors, protocols, methods)
    for cell in cells:
        cell_dir = os.path.join(out_dir, cell.name)
        done_file = os.path.join(cell_dir, CELL_FILE)
        if _load_done(cell, done_file):
            logger.info("zoo: %s already done (%s), not re-run", cell.name, done_file)
            continue
        os.makedirs(cell_dir, exist_ok=True)
        logger.info("zoo: running %s", cell.name)
        start = time.perf_counter()
        code = runner(config_file, [*opts, *cell_overrides(cell, out_dir)], os.path.join(cell_dir, "zoo.log"), nproc)
        cell.train_seconds = time.perf_counter() - start
        if code != 0:
            cell.status = "failed"
            msg = f"zoo: {cell.name} failed with exit code {code} (log: {os.path.join(cell_dir, 'zoo.log')})"
            if not keep_going:
                raise RuntimeError(msg)
            logger.error(msg)
            continue
        cell.metrics = _test_metrics(cell_dir, test_split)
        _save_done(cell, done_file)
    if baseline and "predcls" in protocols:
        cells.append(frequency_prior_cell(config_file, out_dir, opts, test_split))
    write_zoo_report(cells, out_dir)
    return cells


#: the reference row of PredCls tables (what every predictor has to beat)
PRIOR_CELL = ZooCell("FrequencyPrior", "predcls", "none")


def frequency_prior_cell(config_file: str, out_dir: str, opts: Sequence[str] = (),
                         test_split: Optional[str] = None) -> ZooCell:
    """The frequency prior (``sgg.evaluation.baselines``: the train split's most frequent predicate
    per object-class pair, no training) scored like a cell on the same PredCls test split, in
    ``<out_dir>/FrequencyPrior-predcls-none`` (kept like a finished cell; ``train_seconds`` is its
    scoring time)."""
    from sgg.config import load_config
    from sgg.evaluation.baselines import run_baselines

    cell = ZooCell(PRIOR_CELL.predictor, PRIOR_CELL.protocol, PRIOR_CELL.method)
    cell_dir = os.path.join(out_dir, cell.name)
    done_file = os.path.join(cell_dir, CELL_FILE)
    if _load_done(cell, done_file):
        return cell
    os.makedirs(cell_dir, exist_ok=True)
    cfg = load_config(config_file, [*opts, "OUTPUT_DIR", cell_dir])
    start = time.perf_counter()
    metrics = run_baselines(cfg, ["frequency_prior"], split_name=test_split)["frequency_prior"]
    cell.train_seconds = time.perf_counter() - start
    cell.metrics = {k: v for k, v in metrics.items() if k in _KEPT}
    _save_done(cell, done_file)
    return cell


def _load_done(cell: ZooCell, done_file: str) -> bool:
    """Fill ``cell`` from its ``zoo_cell.json`` (status "skipped"); False when it has none."""
    if not os.path.isfile(done_file):
        return False
    with open(done_file) as f:
        saved = json.load(f)
    cell.metrics, cell.train_seconds, cell.status = saved["metrics"], saved["train_seconds"], "skipped"
    return True


def _save_done(cell: ZooCell, done_file: str) -> None:
    """Mark ``cell`` done and write its ``zoo_cell.json`` (what makes a re-run skip it)."""
    cell.status = "done"
    atomic_write_text(done_file, json.dumps({"metrics": cell.metrics, "train_seconds": cell.train_seconds,
                                             "cell": cell.name}, indent=1))


def format_zoo_table(cells: Sequence[ZooCell]) -> str:
    """A markdown table of the finished cells (percentages, two decimals)."""
    def trio(m: Dict[str, Any], key: str) -> str:
        vals = [m.get(f"{key}@{k}") for k in _KS]
        return " / ".join("-" if v is None else f"{100 * v:.2f}" for v in vals)

    lines = ["| predictor | protocol | method | R@20 / 50 / 100 | mR@20 / 50 / 100 | F@20 / 50 / 100 | "
             "zR@20 / 50 / 100 | train min |", "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c.status not in ("done", "skipped"):
            lines.append(f"| {c.predictor} | {c.protocol} | {c.method} | {c.status} | | | | |")
            continue
        minutes = "-" if c.train_seconds is None else f"{c.train_seconds / 60:.1f}"
        lines.append(f"| {c.predictor} | {c.protocol} | {c.method} | {trio(c.metrics, 'R')} | "
                     f"{trio(c.metrics, 'mR')} | {trio(c.metrics, 'F')} | {trio(c.metrics, 'zR')} | {minutes} |")
    return "\n".join(lines) + "\n"


def write_zoo_report(cells: Sequence[ZooCell], out_dir: str) -> None:
    """``zoo_table.md``, ``zoo_results.json`` and ``zoo_plot.png`` (R@50 vs mR@50) in ``out_dir``."""
    atomic_write_text(os.path.join(out_dir, "zoo_table.md"), format_zoo_table(cells))
    atomic_write_text(os.path.join(out_dir, "zoo_results.json"),
                      json.dumps([asdict(c) | {"name": c.name} for c in cells], indent=1))
    done = [c for c in cells if c.status in ("done", "skipped") and "R@50" in c.metrics and "mR@50" in c.metrics]
    if not done:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    markers = {"predcls": "o", "sgcls": "s", "sgdet": "^"}
    for c in done:
        ax.scatter(100 * c.metrics["mR@50"], 100 * c.metrics["R@50"], marker=markers[c.protocol],
                   facecolors="none" if c.method == "plain" else None, edgecolors="C0", color="C1")
        ax.annotate(c.name, (100 * c.metrics["mR@50"], 100 * c.metrics["R@50"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mR@50 (%)")
    ax.set_ylabel("R@50 (%)")
    ax.set_title("predictor zoo (hollow: plain, filled: HML; o PredCls, s SGCls, ^ SGDet)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(os.path.join(out_dir, "zoo_plot.png"), lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
