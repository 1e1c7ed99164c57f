"""Train (or evaluate) the Faster R-CNN detector on a VG150-format dataset (SGB step 1).

    torchrun --nproc_per_node=4 tools/detector_train_net.py --config-file CONFIG.yaml \
        SOLVER.IMS_PER_BATCH 8 OUTPUT_DIR output/detector
    python tools/detector_train_net.py --config-file CONFIG.yaml --eval-only MODEL.WEIGHT output/detector

Training: box losses (RPN objectness + box regression, ROI classification + box regression);
validation on ``DATASETS.VAL[0]`` every ``SOLVER.VAL_PERIOD`` iterations reports box AP
(``AP50``, SGB's "mAP", and COCO ``AP``); the best AP50 checkpoint is kept. The number of classes
comes from the dataset (151 on VG150, the profile's on SynthVG). After training (or with
``--eval-only``) every ``DATASETS.TEST`` split is evaluated; the metrics go to
``OUTPUT_DIR/inference/<dataset>/detection.json``. ``--eval-only`` loads ``MODEL.WEIGHT`` (a file,
or a directory whose ``last_checkpoint`` names one), else ``OUTPUT_DIR``'s last checkpoint.
The job is :mod:`sgg.engine.detector` (``train_detector`` / ``test_detector``).
"""
from sgg.engine import default_argument_parser, setup
from sgg.engine.detector import test_detector, train_detector


def main(argv=None, prog=None):
    """Returns the job's result (``{"state": ..., <test split>: box AP}``; ``{<test split>: box AP}``
    with --eval-only)."""
    parser = default_argument_parser("Faster R-CNN detector training (SGB step 1)")
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    cfg = setup(args)
    if args.eval_only:
        return test_detector(cfg)
    return train_detector(cfg, resume=args.resume)
