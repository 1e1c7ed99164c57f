"""Presenting relation metrics: SGB's log table, a percentage summary, JSON, per-predicate plot.

The table reproduces Scene-Graph-Benchmark.pytorch's wording (``SGG eval:     R @ 20: 0.5923;
... for mode=predcls, type=Recall(Main).``) so logs can be compared line by line; F@K, which
SGB does not print, follows in the same style. JSON values are fractions (NaN -> null).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

SEPARATOR = "=" * 100
DETAILS_OPEN = "----------------------- Details ------------------------"
DETAILS_CLOSE = "--------------------------------------------------------"

# (metric prefix, SGB cell label, SGB type name, per-predicate key prefix)
_ROWS = (
    ("R", "    R", "Recall(Main)", None),
    ("ngR", " ng-R", "No Graph Constraint Recall(Main)", None),
    ("zR", "   zR", "Zero Shot Recall", None),
    ("ngzR", "ng-zR", "No Graph Constraint Zero Shot Recall", None),
    ("mR", "   mR", "Mean Recall", "per_predicate_R"),
    ("ngmR", "ng-mR", "No Graph Constraint Mean Recall", "ng_per_predicate_R"),
    ("A", "    A", "TopK Accuracy", None),
    ("F", "    F", "F Score (harmonic mean of R and mR)", None),
)


def metric_ks(metrics: Mapping[str, Any]) -> List[int]:
    """The K values present in a metrics dict (from its ``R@K`` keys), ascending."""
    return sorted(int(m.group(1)) for key in metrics for m in [re.fullmatch(r"R@(\d+)", key)] if m)


def _detail_k(ks: Sequence[int]) -> int:
    return 100 if 100 in ks else max(ks)


def _names(metrics: Mapping[str, Any], predicate_names: Optional[Sequence[str]], num: int) -> List[str]:
    names = predicate_names if predicate_names is not None else metrics.get("predicate_names")
    if names is None:
        return [str(i) for i in range(1, num + 1)]
    names = [str(n) for n in names]
    return names[1:] if len(names) == num + 1 else names


def format_report(metrics: Mapping[str, Any], mode: Optional[str] = None,
                  predicate_names: Optional[Sequence[str]] = None) -> str:
    """SGB's result block: detection mAp (when ``AP50`` is present), then one ``SGG eval:`` line
    per metric family present, with the per-predicate R@100 details after mR and ng-mR."""
    mode = mode or metrics.get("mode", "?")
    ks = metric_ks(metrics)
    out = ["", SEPARATOR]
    if "AP50" in metrics:
        out += ["Detection evaluation mAp=%.4f" % metrics["AP50"], SEPARATOR]
    for prefix, label, type_name, per_key in _ROWS:
        if f"{prefix}@{ks[0]}" not in metrics:
            continue
        line = "SGG eval: "
        for k in ks:
            line += "%s @ %d: %.4f; " % (label, k, float(metrics[f"{prefix}@{k}"]))
        out.append(line + " for mode=%s, type=%s." % (mode, type_name))
        if per_key is not None and f"{per_key}@{_detail_k(ks)}" in metrics:
            values = metrics[f"{per_key}@{_detail_k(ks)}"]
            names = _names(metrics, predicate_names, len(values))
            out.append(DETAILS_OPEN)
            out.append("".join("({}:{:.4f}) ".format(n, r) for n, r in zip(names, values)))
            out.append(DETAILS_CLOSE)
    out.append(SEPARATOR)
    return "\n".join(out) + "\n"


def is_oi_metrics(metrics: Mapping[str, Any]) -> bool:
    """Whether ``metrics`` is an :class:`~sgg.evaluation.OIEvaluator` result (it has ``wmAP_rel``)."""
    return "wmAP_rel" in metrics


def format_metrics(metrics: Mapping[str, Any], predicate_names: Optional[Sequence[str]] = None) -> str:
    """The log block of a metrics dict: :func:`~sgg.evaluation.format_oi_report` for Open Images
    metrics, :func:`format_report` (SGB's table) otherwise."""
    if is_oi_metrics(metrics):
        from .oi_eval import format_oi_report

        return format_oi_report(metrics, predicate_names=predicate_names)
    return format_report(metrics, predicate_names=predicate_names)


def format_summary_table(metrics: Mapping[str, Any]) -> str:
    """Compact table in percentages with two decimals: one row per metric family, one column
    per K."""
    ks = metric_ks(metrics)
    head = f"{'mode=' + str(metrics.get('mode', '?')):<14}" + "".join(f"{'@' + str(k):>9}" for k in ks)
    rows = [head]
    for prefix, label, _, _ in _ROWS:
        if f"{prefix}@{ks[0]}" not in metrics:
            continue
        cells = "".join(f"{100.0 * float(metrics[f'{prefix}@{k}']):>9.2f}" for k in ks)
        rows.append(f"{label.strip():<14}{cells}")
    if "AP50" in metrics:
        rows.append(f"{'box AP50':<14}{100.0 * float(metrics['AP50']):>9.2f}")
    if "num_images" in metrics:
        rows.append(f"images: {metrics['num_images']}")
    return "\n".join(rows) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


def write_json(metrics: Mapping[str, Any], path: str) -> str:
    """All metrics as JSON (fractions; NaN written as null). Returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(metrics), f, indent=2)
        f.write("\n")
    return path


def predicate_order(predicate_frequency: Optional[Sequence[float]], num: int) -> np.ndarray:
    """Predicate indices (0-based, predicate = index + 1) from most to least frequent in training
    (ties keep the id order); the identity without frequencies. ``predicate_frequency`` has P
    entries, or P+1 with the background first."""
    if predicate_frequency is None:
        return np.arange(num)
    freq = np.asarray(predicate_frequency, dtype=np.float64).reshape(-1)
    if len(freq) == num + 1:
        freq = freq[1:]
    if len(freq) != num:
        raise ValueError(f"{len(freq)} predicate frequencies for {num} predicates")
    return np.argsort(-freq, kind="stable")


def plot_per_predicate_recall(metrics: Mapping[str, Any], path: str,
                              predicate_frequency: Optional[Sequence[float]] = None,
                              predicate_names: Optional[Sequence[str]] = None,
                              key: Optional[str] = None) -> str:
    """Bar plot (PNG) of per-predicate R@100 (``key``, default ``per_predicate_R@100`` or the
    largest K), predicates sorted by training frequency, most frequent (head) first.

    ``predicate_frequency``: P training counts (or P+1 with the background first); without it the
    predicate order is kept. Uses matplotlib's Agg canvas directly (no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if key is None:
        key = f"per_predicate_R@{_detail_k(metric_ks(metrics))}"
    values = np.asarray(metrics[key], dtype=np.float64)
    num = len(values)
    names = _names(metrics, predicate_names, num)
    order = predicate_order(predicate_frequency, num)

    fig = Figure(figsize=(max(6.0, 0.28 * num + 1.5), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(num), values[order] * 100.0, color="tab:blue")
    ax.set_xticks(np.arange(num))
    ax.set_xticklabels([names[i] for i in order], rotation=90, fontsize=8)
    ax.set_xlim(-0.6, num - 0.4)
    ax.set_ylabel(f"{key} (%)")
    mean_key = key.replace("ng_per_predicate_R", "ngmR").replace("per_predicate_R", "mR")
    title = f"mode={metrics.get('mode', '?')}"
    if mean_key in metrics:
        title += f", {mean_key} = {100.0 * float(metrics[mean_key]):.2f}"
    if predicate_frequency is not None:
        title += "\npredicates by training frequency, head to tail"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_report(metrics: Mapping[str, Any], output_dir: str, name: str = "relation_metrics",
                 predicate_frequency: Optional[Sequence[float]] = None,
                 predicate_names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Write ``<name>.txt`` (SGB table + summary; PySGG's Open Images block for OI metrics),
    ``<name>.json`` and ``<name>_per_predicate.png`` under ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    txt = os.path.join(output_dir, f"{name}.txt")
    with open(txt, "w") as f:
        f.write(format_metrics(metrics, predicate_names=predicate_names))
        if not is_oi_metrics(metrics):
            f.write(format_summary_table(metrics))
    paths = {"text": txt, "json": write_json(metrics, os.path.join(output_dir, f"{name}.json"))}
    if any(k.startswith("per_predicate_R@") for k in metrics):
        paths["plot"] = plot_per_predicate_recall(
            metrics, os.path.join(output_dir, f"{name}_per_predicate.png"),
            predicate_frequency=predicate_frequency, predicate_names=predicate_names)
    return paths


def format_comparison(runs: Mapping[str, Mapping[str, Any]], ks: Sequence[int] = (20, 50, 100),
                      predicate_frequency: Optional[Sequence[float]] = None,
                      predicate_names: Optional[Sequence[str]] = None, detail_k: int = 100) -> str:
    """A percentage table of R@K / mR@K (and F@K) for several runs, then per-predicate R@detail_k
    side by side, predicates ordered head -> tail by ``predicate_frequency`` with head/body/tail
    means (thirds of the predicates). ``runs``: {name: metrics dict of :func:`evaluate_records`}."""
    names = list(runs)
    cols = [f"{m}@{k}" for m in ("R", "mR", "F") for k in ks]
    width = max(10, max(len(n) for n in names) + 2)
    lines = ["run".ljust(width) + "".join(c.rjust(9) for c in cols)]
    for n in names:
        m = runs[n]
        lines.append(n.ljust(width) + "".join(
            ("%9.2f" % (100 * float(m[c]))) if c in m and m[c] is not None else "      n/a" for c in cols))
    key = f"per_predicate_R@{detail_k}"
    if all(key in runs[n] for n in names):
        num = len(runs[names[0]][key])
        order = predicate_order(predicate_frequency, num)
        pnames = _names(runs[names[0]], predicate_names, num)
        lines += ["", f"per-predicate R@{detail_k} (%), head -> tail" + (" by training frequency"
                                                                      if predicate_frequency is not None else "")]
        lines.append("predicate".ljust(18) + "".join(n[:12].rjust(14) for n in names))
        for i in order:
            lines.append(str(pnames[i])[:17].ljust(18) + "".join(
                "%14.2f" % (100 * float(runs[n][key][i])) for n in names))
        thirds = np.array_split(np.asarray(order), 3)
        for label, idx in zip(("head third", "body third", "tail third"), thirds):
            lines.append(label.ljust(18) + "".join(
                "%14.2f" % (100 * float(np.mean([runs[n][key][i] for i in idx]))) for n in names))
    return "\n".join(lines) + "\n"
