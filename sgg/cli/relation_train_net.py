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
HML: add MODEL.HML.ENABLED True (or run relation_train_distill_fisher_only). Keys of a training
method the config leaves off (HML's MODEL.USE_CONFIDENCE, MODEL.DISTILL_TEMPERATURE,
SOLVER.LAMBDA_FOR_PARAM, SOLVER.ALPHA_FOR_FISHER, SOLVER.DISTILL_TYPE, MODEL.HML.*; MODEL.STDG.*)
stop training with an error that names them, instead of being ignored.
"""
from sgg.engine import default_argument_parser, setup
from sgg.engine.relation import test_relation, train_relation


def build_parser(prog=None, description="relation training (two-stage SGG)"):
    parser = default_argument_parser(description)
    parser.prog = prog or parser.prog
    return parser


def run(args):
    """The job of parsed arguments: set up (config, logging, OUTPUT_DIR), then train, or evaluate
    with --eval-only. The command line's overrides go to the job too (a key of a training method
    the config leaves off, e.g. SOLVER.LAMBDA_FOR_PARAM without MODEL.HML.ENABLED True, stops
    training with an error naming it)."""
    cfg = setup(args)
    if args.eval_only:
        return test_relation(cfg, opts=args.opts)
    return train_relation(cfg, resume=args.resume, opts=args.opts)


def main(argv=None, prog=None):
    """Returns the job's result (``{"state": ..., <test split>: metrics}``; the metrics with
    --eval-only)."""
    return run(build_parser(prog).parse_args(argv))
