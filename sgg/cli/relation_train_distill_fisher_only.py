"""Train a relation model with HML (relation_train_net with MODEL.HML.ENABLED True).

The HML fork's training script, under its name; its README command runs as written with torchrun:

    torchrun --master_port 10030 --nproc_per_node=2 tools/relation_train_distill_fisher_only.py \
        --config-file "configs/e2e_relation_X_101_32_8_FPN_1x.yaml" \
        MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True \
        MODEL.USE_CONFIDENCE False MODEL.DISTILL_TEMPERATURE 2 MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor \
        SOLVER.IMS_PER_BATCH 12 TEST.IMS_PER_BATCH 2 DTYPE "float16" SOLVER.MAX_ITER 16000 \
        SOLVER.VAL_PERIOD 1000 SOLVER.CHECKPOINT_PERIOD 1000 SOLVER.LAMBDA_FOR_PARAM 1.0 \
        SOLVER.ALPHA_FOR_FISHER 0.5 SOLVER.DISTILL_TYPE l2 SOLVER.BASE_LR 0.001 GLOVE_DIR glove \
        MODEL.PRETRAINED_DETECTOR_CKPT checkpoints/pretrained_faster_rcnn/model_final.pth OUTPUT_DIR out

The same job, options and overrides as relation_train_net (docs there), with MODEL.HML.ENABLED True
put before the overrides: it is also in OUTPUT_DIR/config.yaml, so re-running resumes the HML run,
and `relation_train_net ... MODEL.HML.ENABLED True` is the same run. MODEL.HML.ENABLED False on
this command line is an error (exit status 2): use relation_train_net for a plain run. Test the
model with relation_test_net as usual (the HML keys are not needed there).
"""
from sgg.cli.relation_train_net import build_parser, run
from sgg.config.config import decode_override

SWITCH = "MODEL.HML.ENABLED"


def main(argv=None, prog=None):
    """Returns the job's result, as relation_train_net."""
    parser = build_parser(prog, "relation training with HML (hierarchical memory learning): relation_train_net "
                                "with MODEL.HML.ENABLED True")
    args = parser.parse_args(argv)
    given = list(args.opts or [])
    for key, value in zip(given[0::2], given[1::2]):
        if key == SWITCH and decode_override(value) is not True:
            parser.error(f"{SWITCH} {value} contradicts this command, which trains with HML: remove it "
                         f"(HML is on here), or run tools/relation_train_net.py for a plain run")
    args.opts = [SWITCH, "True", *given]
    return run(args)
