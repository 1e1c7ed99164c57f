"""Train and evaluate a list of relation predictors x protocols x {plain, HML} on one dataset and write one comparison table.

    python tools/zoo.py --config-file configs/synthvg/motifs_predcls.yaml --output output/zoo \
        --predictors MotifPredictor,VCTreePredictor,TransformerPredictor --protocols predcls,sgcls \
        --methods plain,hml [KEY VALUE ...]

Each cell trains in its own OUTPUT_DIR (<output>/<predictor>-<protocol>-<method>) with the config
plus the overrides; a finished cell is not re-run (re-running the command continues the zoo), an
interrupted one resumes from its last checkpoint. The table (R@K, mR@K, F@K, zR@K, training time)
goes to <output>/zoo_table.md (and is printed), the cells to zoo_results.json, the R@50 / mR@50
plot to zoo_plot.png. PredCls tables end with the frequency prior on the same test split (the
baseline every predictor has to beat; --no-baseline leaves it out).
"""
from __future__ import annotations

import argparse


def _names(text: str):
    return [t for t in text.split(",") if t]


def parse_args(argv=None, prog=None):
    from sgg.engine.zoo import METHODS
    from sgg.protocol import MODES

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the base config of every cell")
    p.add_argument("--output", required=True, help="folder of the cells and the table")
    p.add_argument("--predictors", type=_names, required=True,
                   help="comma-separated registered predictor names (MODEL.ROI_RELATION_HEAD.PREDICTOR)")
    p.add_argument("--protocols", type=_names, default=["predcls"], help=f"comma-separated, of {','.join(MODES)}")
    p.add_argument("--methods", type=_names, default=["plain"], help=f"comma-separated, of {','.join(METHODS)}")
    p.add_argument("--test-split", default=None, help="split of the reported metrics (default DATASETS.TEST[0])")
    p.add_argument("--nproc", type=int, default=1, help="processes per cell (torchrun)")
    p.add_argument("--stop-on-failure", action="store_true", help="stop at the first failed cell")
    p.add_argument("--no-baseline", action="store_true",
                   help="leave out the frequency-prior row (added to PredCls tables by default)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every cell: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    from sgg.engine.zoo import format_zoo_table, run_zoo
    from sgg.modeling.relation.predictors import RELATION_PREDICTOR_REGISTRY
    from sgg.utils.logger import setup_logger

    setup_logger()
    for name in args.predictors:
        RELATION_PREDICTOR_REGISTRY.get(name)  # an unknown name fails now, naming the known ones
    cells = run_zoo(args.config_file, args.output, args.predictors, args.protocols, args.methods, opts=args.opts,
                    test_split=args.test_split, nproc=args.nproc, keep_going=not args.stop_on_failure,
                    baseline=not args.no_baseline)
    print(format_zoo_table(cells), end="")
    print(f"table: {args.output}/zoo_table.md, plot: {args.output}/zoo_plot.png")
    return 1 if any(c.status == "failed" for c in cells) else 0
