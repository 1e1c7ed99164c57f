#!/usr/bin/env python
"""Evaluate a trained relation model (SGB's tools/relation_test_net.py).

    torchrun --nproc_per_node=2 tools/relation_test_net.py --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True \
        MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor TEST.IMS_PER_BATCH 2 DTYPE "float16" \
        GLOVE_DIR glove MODEL.PRETRAINED_DETECTOR_CKPT checkpoints/pretrained_faster_rcnn/model_final.pth \
        OUTPUT_DIR output/motif-precls-exmp

Loads MODEL.WEIGHT if set, else the checkpoint named by OUTPUT_DIR/last_checkpoint (as SGB), and
writes OUTPUT_DIR/inference/<dataset>/{relation_metrics.txt,.json,_per_predicate.png,predictions.npz}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.engine import default_argument_parser, setup, shutdown_distributed  # noqa: E402
from sgg.engine.relation import test_relation  # noqa: E402


def main(argv=None):
    args = default_argument_parser("relation evaluation (two-stage SGG)").parse_args(argv)
    return test_relation(setup(args))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutdown_distributed()
