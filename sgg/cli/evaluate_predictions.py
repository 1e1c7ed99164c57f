"""Score a saved predictions file against a dataset split: an sgg ``.npz`` (written by the
evaluator), or an sgbench predictions ``.json`` (version 1, 0-based ids, e.g. written by another
framework; its protocol is the config's USE_GT_BOX / USE_GT_OBJECT_LABEL; no box AP).

    python tools/evaluate_predictions.py --predictions OUTPUT_DIR/inference/predictions.npz \
        --config-file configs/synthvg/small_predcls.yaml [DATASETS.TEST "('synthvg_small_test',)"] [KEY VALUE ...]

Prints SGB's table and writes <name>.json (fractions), <name>.txt and <name>_per_predicate.png
(R@100 per predicate, head -> tail by training frequency) to OUTPUT_DIR.
"""
import argparse

from sgg.config import load_config
from sgg.data.catalog import find_zeroshot_file, get_dataset_files, train_split_of
from sgg.data.datasets import DATASET_FORMAT_REGISTRY, load_zeroshot_triplets
from sgg.data.statistics import get_dataset_statistics
from sgg.evaluation import format_report, format_summary_table, write_report
from sgg.evaluation.rescore import rescore_predictions
from sgg.evaluation.sgbench import evaluate_sgbench_predictions
from sgg.protocol import protocol_from_config
from sgg.utils.logger import setup_logger


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, metavar="FILE")
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--name", default="relation_metrics", help="report file name stem")
    parser.add_argument("--no-box-ap", action="store_true", help="skip the COCO box AP")
    parser.add_argument("--frequency-prior", action="store_true",
                        help="replace the file's relations by the frequency prior over the file's own objects "
                             "(the 'prior through the same boxes' baseline)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    setup_logger(cfg.OUTPUT_DIR)
    files = get_dataset_files(cfg.DATASETS.TEST[0], cfg.DATASETS.DATA_DIR)
    dataset = DATASET_FORMAT_REGISTRY.get(files.format).from_files(files, num_val_im=cfg.DATASETS.NUM_VAL_IMAGES,
                                                                   check_images=False)
    zs_file = find_zeroshot_file(files, cfg.DATASETS.ZEROSHOT_FILE)
    train_files = get_dataset_files(train_split_of(files.name), cfg.DATASETS.DATA_DIR)
    stats = get_dataset_statistics(train_files, cache_dir=cfg.OUTPUT_DIR, num_val_im=cfg.DATASETS.NUM_VAL_IMAGES)
    zs = load_zeroshot_triplets(zs_file) if zs_file else None
    if args.predictions.endswith(".json"):  # an sgbench predictions file (version 1), from any framework
        if args.frequency_prior:
            parser.error("--frequency-prior needs an sgg .npz predictions file, not an sgbench .json")
        metrics = evaluate_sgbench_predictions(
            args.predictions, dataset, mode=protocol_from_config(cfg), num_predicates=dataset.num_predicates - 1,
            zeroshot_triplets=zs, iou_threshold=cfg.TEST.RELATION.IOU_THRESHOLD,
            predicate_names=dataset.ind_to_predicates[1:], num_classes=len(dataset.ind_to_classes) - 1)
    else:
        metrics = rescore_predictions(args.predictions, dataset, zeroshot_triplets=zs,
                                      iou_threshold=cfg.TEST.RELATION.IOU_THRESHOLD,
                                      with_box_ap=not args.no_box_ap,
                                      prior_pred_dist=stats["pred_dist"] if args.frequency_prior else None)
    paths = write_report(metrics, cfg.OUTPUT_DIR, name=args.name, predicate_frequency=stats["predicate_counts"],
                         predicate_names=dataset.ind_to_predicates[1:])
    print(format_report(metrics, predicate_names=dataset.ind_to_predicates[1:]))
    print(format_summary_table(metrics))
    print("written: " + ", ".join(paths.values()))
