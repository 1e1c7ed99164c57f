"""Training curves from the trainer's ``OUTPUT_DIR/metrics.json`` (JSON lines).

The file is written by :class:`sgg.engine.hooks.MetricsWriter`, one JSON object per line, each with
``"iteration"``:

* training rows (every ``SOLVER.LOG_PERIOD`` iterations): ``total_loss``, every ``loss_*`` term
  (means over the window), ``lr``, ``time``, ``data_time``, ``eta_seconds``, ...;
* validation rows: ``val/<metric>``, e.g. ``val/R@100``, ``val/mR@50`` (fractions), or ``val/AP50``
  for a detector. Non-finite values are written as ``null``.

A resumed run appends to the same file, so an iteration can appear twice; the row written last
wins. :func:`plot_training_curves` draws one PNG with a subplot per series group.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["plot_training_curves", "read_metrics_jsonl"]

Series = Dict[str, Dict[int, float]]

_RECALL = re.compile(r"^val/(?:(?P<prefix>.+)/)?(?P<name>m?R)@(?P<k>\d+)$")
_DETECTION = re.compile(r"^val/(?:(?P<prefix>.+)/)?(?P<name>AP50|AP75|AP)$")
_PLOT_KS = (20, 50, 100)


def read_metrics_jsonl(path: str) -> Series:
    """``{key: {iteration: value}}`` of every numeric entry of the JSON-lines file ``path``.

    Lines that are not JSON objects with an integer ``iteration`` (e.g. a line cut by a crash) are
    skipped with one warning; ``null`` values are skipped; a later line overrides an earlier one
    for the same iteration and key (resumed runs append).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file not found: '{path}' (the trainer writes OUTPUT_DIR/metrics.json)")
    series: Series = defaultdict(dict)
    bad: List[int] = []
    with open(path, "r") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                it = int(row["iteration"])
            except (ValueError, KeyError, TypeError):
                bad.append(n)
                continue
            for k, v in row.items():
                if k == "iteration" or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                if math.isfinite(float(v)):
                    series[k][it] = float(v)
    if bad:
        logger.warning("%s: skipped %d line(s) that are not metric rows (first: line %d)", path, len(bad), bad[0])
    return dict(series)


def _xy(points: Dict[int, float]) -> Tuple[np.ndarray, np.ndarray]:
    its = np.array(sorted(points), dtype=np.int64)
    return its, np.array([points[i] for i in its], dtype=np.float64)


def _panels(series: Series) -> List[Tuple[str, str, List[Tuple[str, str, float]]]]:
    """[(title, y label, [(legend, key, scale)])] in display order."""
    panels = []
    if "total_loss" in series:
        panels.append(("total_loss", "loss", [("total_loss", "total_loss", 1.0)]))
    for k in sorted(k for k in series if k.startswith("loss")):
        panels.append((k, "loss", [(k, k, 1.0)]))
    if "lr" in series:
        panels.append(("learning rate", "lr", [("lr", "lr", 1.0)]))
    recall: Dict[str, List[Tuple[int, str, str]]] = defaultdict(list)
    detection: List[Tuple[str, str, float]] = []
    for k in series:
        m = _RECALL.match(k)
        if m:
            prefix = f"{m.group('prefix')} " if m.group("prefix") else ""
            recall[m.group("name")].append((int(m.group("k")), f"{prefix}{m.group('name')}@{m.group('k')}", k))
            continue
        m = _DETECTION.match(k)
        if m:
            prefix = f"{m.group('prefix')} " if m.group("prefix") else ""
            detection.append((f"{prefix}{m.group('name')}", k, 100.0))
    for name in ("R", "mR"):
        entries = sorted(recall.get(name, []))
        if any(kk in _PLOT_KS for kk, _, _ in entries):
            entries = [e for e in entries if e[0] in _PLOT_KS]
        if entries:
            panels.append((f"validation {name}@K", "%", [(label, key, 100.0) for _, label, key in entries]))
    if detection:
        panels.append(("validation box AP", "%", sorted(detection)))
    return panels


def plot_training_curves(metrics_jsonl_path: str, out_png: str, title: str = "") -> str:
    """One PNG of the curves in ``metrics_jsonl_path`` vs iteration: ``total_loss``, each
    ``loss_*`` term, ``lr``, validation ``R@20/50/100`` and ``mR@20/50/100`` (in %; other K when
    these are absent) and detection AP when present. Written atomically to ``out_png``; returns it.

    Raises FileNotFoundError for a missing file and ValueError (naming it) when it has nothing
    to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sgg.utils.io import atomic_write

    series = read_metrics_jsonl(metrics_jsonl_path)
    panels = _panels(series)
    if not panels:
        raise ValueError(f"'{metrics_jsonl_path}' has no loss, lr or validation metric rows to plot "
                         f"(keys: {', '.join(sorted(series)) or 'none'})")
    ncols = min(3, len(panels))
    nrows = int(math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(4.8 * ncols, 3.1 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for n, (panel_title, ylabel, lines) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, n + 1)
        for legend, key, scale in lines:
            x, y = _xy(series[key])
            ax.plot(x, y * scale, marker="o" if len(x) <= 30 else None, markersize=3, linewidth=1.2, label=legend)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    atomic_write(out_png, lambda f: fig.savefig(f, format="png"))
    return out_png


def training_curves_keys(path: str) -> Sequence[str]:
    """The series keys :func:`plot_training_curves` would draw from ``path`` (for tests / tools)."""
    return [key for _, _, lines in _panels(read_metrics_jsonl(path)) for _, key, _ in lines]
