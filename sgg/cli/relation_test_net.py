"""Evaluate a trained relation model (SGB's tools/relation_test_net.py).

    torchrun --nproc_per_node=2 tools/relation_test_net.py --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True \
        MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor TEST.IMS_PER_BATCH 2 DTYPE "float16" \
        GLOVE_DIR glove MODEL.PRETRAINED_DETECTOR_CKPT checkpoints/pretrained_faster_rcnn/model_final.pth \
        OUTPUT_DIR output/motif-precls-exmp

(installed: `sgg relation_test_net ...`, or `torchrun --nproc_per_node=2 -m sgg relation_test_net ...`).
Loads MODEL.WEIGHT if set, else the checkpoint named by OUTPUT_DIR/last_checkpoint (as SGB), and
writes OUTPUT_DIR/inference/<dataset>/{relation_metrics.txt,.json,_per_predicate.png,predictions.npz}.
Training-only keys (HML's SOLVER.LAMBDA_FOR_PARAM, ...) are accepted, so the training overrides can
be passed as they are (a warning lists those of a method the config leaves off).
"""
from sgg.engine import default_argument_parser, setup
from sgg.engine.relation import test_relation


def main(argv=None, prog=None):
    """Returns ``{<test split>: metrics}``."""
    parser = default_argument_parser("relation evaluation (two-stage SGG)")
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    return test_relation(setup(args), opts=args.opts)
