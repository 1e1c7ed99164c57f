"""Train a relation model (SGB's tools/relation_train_net.py; same config keys and overrides).

    torchrun --nproc_per_node=2 tools/relation_train_net.py --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True \
        MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor SOLVER.IMS_PER_BATCH 12 TEST.IMS_PER_BATCH 2 \
        DTYPE "float16" SOLVER.MAX_ITER 50000 SOLVER.VAL_PERIOD 2000 SOLVER.CHECKPOINT_PERIOD 2000 \
        GLOVE_DIR glove MODEL.PRETRAINED_DETECTOR_CKPT checkpoints/pretrained_faster_rcnn/model_final.pth \
        OUTPUT_DIR output/motif-precls-exmp

A plain `python tools/relation_train_net.py ...` (or `sgg relation_train_net ...` when installed;
`torchrun --nproc_per_node=2 -m sgg relation_train_net ...` for several processes) runs one process.
Re-running the same command resumes from OUTPUT_DIR's last checkpoint (--no-resume starts over).
"""
from sgg.engine import default_argument_parser, setup
from sgg.engine.relation import test_relation, train_relation


def main(argv=None, prog=None):
    """Returns the job's result (``{"state": ..., <test split>: metrics}``; the metrics with
    --eval-only)."""
    parser = default_argument_parser("relation training (two-stage SGG)")
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    cfg = setup(args)
    if args.eval_only:
        return test_relation(cfg)
    return train_relation(cfg, resume=args.resume)
