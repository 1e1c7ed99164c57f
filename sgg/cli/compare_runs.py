"""Compare the metrics of several runs side by side (e.g. plain Motifs vs HML).

    python tools/compare_runs.py plain=output/motifs/inference/synthvg_small_test/relation_metrics.json \
        hml=output/hml/inference/synthvg_small_test/relation_metrics.json \
        [--statistics output/motifs/<name>_statistics.npz]

Prints R@K / mR@K / F@K and the per-predicate R@100 table ordered head -> tail by the training
predicate counts of the statistics file (SGB's order otherwise), with head/body/tail means.
"""
import argparse
import json

import numpy as np

from sgg.evaluation.report import format_comparison


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=METRICS_JSON")
    parser.add_argument("--statistics", default="", help="a *_statistics.npz (for the head -> tail order)")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"'{item}': expected NAME=PATH")
        with open(path) as f:
            runs[name] = json.load(f)
    freq = None
    if args.statistics:
        with np.load(args.statistics, allow_pickle=False) as z:
            freq = z["predicate_counts"]
    first = next(iter(runs.values()))
    print(format_comparison(runs, predicate_frequency=freq, predicate_names=first.get("predicate_names")))
