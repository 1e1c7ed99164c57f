"""Score the training-free baselines (frequency prior, SynthVG geometric rule) on a test split.

    python tools/score_baselines.py --config-file configs/synthvg/small_predcls.yaml [KEY VALUE ...]

Prints SGB's metric table for each baseline and writes reports to OUTPUT_DIR.
"""
import argparse

from sgg.config import load_config
from sgg.evaluation import format_report
from sgg.evaluation.baselines import BASELINES, run_baselines
from sgg.utils.logger import setup_logger


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES)
    parser.add_argument("--max-images", type=int, default=-1, help="score only the first N test images")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    logger = setup_logger(cfg.OUTPUT_DIR)
    results = run_baselines(cfg, args.baselines, max_images=args.max_images)
    for name, metrics in results.items():
        print(f"\n##### baseline: {name} ({metrics['num_images']} test images, PredCls)")
        print(format_report(metrics, mode="predcls"))
    if results:
        print("\nSummary (%):")
        for name, metrics in results.items():
            print(f"  {name:16s} R@20/50/100 = " + " / ".join("%.2f" % (100 * metrics[f"R@{k}"]) for k in (20, 50, 100))
                  + "   mR@20/50/100 = " + " / ".join("%.2f" % (100 * metrics[f"mR@{k}"]) for k in (20, 50, 100)))
        logger.info("reports written to %s", cfg.OUTPUT_DIR)
