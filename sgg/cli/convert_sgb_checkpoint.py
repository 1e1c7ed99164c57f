"""Convert a Faster R-CNN checkpoint between Scene-Graph-Benchmark (maskrcnn_benchmark) and sgg names.

    # SGB -> sgg (shape-checked against the config's detector when --config-file / overrides are given)
    python tools/convert_sgb_checkpoint.py --input checkpoints/pretrained_faster_rcnn/model_final.pth \
        --output checkpoints/detector_sgg.pth --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml
    # sgg -> SGB (a detector trained with tools/detector_train_net.py, for SGB's code)
    python tools/convert_sgb_checkpoint.py --reverse --input output/detector/model_final.pth \
        --output model_final_sgb.pth

    # a whole SGB / PE-Net relation model (detector + roi_heads.relation.*) -> an sgg relation
    # checkpoint with its metadata; the config names the predictor, protocol and DATASETS.TRAIN
    # (whose dicts json gives the class and predicate names, which SGB files do not carry)
    python tools/convert_sgb_checkpoint.py --input checkpoints/motif-precls-exmp/model_0028000.pth \
        --output motifs_predcls_sgg.pth --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True

Conversion is not needed to use an SGB file in sgg: MODEL.PRETRAINED_DETECTOR_CKPT reads a
detector directly, MODEL.WEIGHT a relation model. The output is ``{"model": state_dict}`` (with a ``.sha256`` beside it). Anchor buffers
are dropped; attribute / relation heads are skipped and listed. Tensors that have no place in the
detector (a backbone of another depth than the config's, unknown keys) stop the conversion: exit
status 1, nothing written, the message names the count, examples and the config keys to set
(MODEL.BACKBONE.CONV_BODY, MODEL.RESNETS.*); --allow-unplaced writes the partial file anyway. The
key mapping and the config keys an SGB detector needs are in sgg/checkpoint/sgb.py (SGB_COMPAT).
"""
from __future__ import annotations

import argparse
import sys

from sgg.checkpoint import CheckpointError
from sgg.config import ConfigError, load_config
from sgg.modeling.detector import build_detector
from sgg.checkpoint.sgb import convert_checkpoint_file, format_report


def _read_checkpoint(path: str):
    """The object ``path`` holds, or None when it is missing or unreadable (the conversion then
    reports that with its own error)."""
    import os

    from sgg.checkpoint import load_checkpoint_file

    if not os.path.isfile(path):
        return None
    try:
        return load_checkpoint_file(path)
    except CheckpointError:
        return None


def _is_sgb_relation(obj) -> bool:
    """Whether a loaded checkpoint is a whole SGB relation model (maskrcnn_benchmark names with
    ``roi_heads.relation.*``)."""
    from sgg.checkpoint.sgb import is_sgb_checkpoint
    from sgg.checkpoint.sgb_relation import SGB_RELATION

    state = obj.get("model", obj) if isinstance(obj, dict) else {}
    if not isinstance(state, dict) or not is_sgb_checkpoint(state):
        return False
    return any(k.startswith(SGB_RELATION) or k.startswith("module." + SGB_RELATION) for k in state)


def _relation_model(cfg):
    """The config's two-stage relation model, built with the class and predicate names of
    DATASETS.TRAIN[0] (its dicts json only; SGB files carry no names)."""
    from sgg.engine.loading import load_class_names
    from sgg.modeling.meta_arch import build_sgg_model

    classes, predicates = load_class_names(cfg)
    model = build_sgg_model(cfg, {"obj_classes": classes, "rel_classes": predicates}, len(classes), len(predicates))
    if not hasattr(model, "relation_head"):
        raise ConfigError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} is not a two-stage relation model: "
                          f"an SGB relation checkpoint converts only to one")
    return model


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="FILE", help="checkpoint to convert")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write the converted checkpoint")
    p.add_argument("--reverse", action="store_true", help="sgg -> SGB names (default: SGB -> sgg)")
    p.add_argument("--prefix", default="", help="with --reverse: take the keys under this prefix, e.g. "
                                                "'detector.' for a whole relation-model checkpoint")
    p.add_argument("--config-file", default="", metavar="FILE",
                   help="config of the sgg detector to check the shapes against (optional)")
    p.add_argument("--allow-unplaced", action="store_true",
                   help="write the file even when tensors of the input have no place in the detector "
                        "(they are left out; default: stop with exit status 1 and write nothing)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    try:
        model_state, metadata, what = None, None, "detector"
        loaded = _read_checkpoint(args.input)  # read once: inspected here, converted below
        relation = not args.reverse and loaded is not None and _is_sgb_relation(loaded)
        if relation and not (args.config_file or args.opts):
            raise ConfigError(f"'{args.input}' is a whole SGB relation model (roi_heads.relation.* keys): its "
                              f"conversion needs the relation model it is for. Pass --config-file (with the "
                              f"predictor and protocol overrides it was trained with, and DATASETS.TRAIN for "
                              f"the class names), or use it directly as MODEL.WEIGHT")
        if args.config_file or args.opts:
            cfg = load_config(args.config_file, args.opts)
            if relation:
                model = _relation_model(cfg)
                model_state, metadata, what = model.state_dict(), dict(model.metadata), "relation model"
            else:
                model_state = build_detector(cfg).state_dict()
        report = convert_checkpoint_file(args.input, args.output, reverse=args.reverse,
                                         model_state=model_state, prefix=args.prefix,
                                         allow_unplaced=args.allow_unplaced, metadata=metadata, loaded=loaded)
    except (FileNotFoundError, CheckpointError, ConfigError, KeyError, ValueError) as e:
        print(f"convert_sgb_checkpoint: error: {e}", file=sys.stderr)
        return 1
    direction = "sgg -> SGB" if args.reverse else "SGB -> sgg"
    print(format_report(report, f"{args.input} ({direction})"))
    if model_state is None:
        print("  (no --config-file: shapes not checked against a detector config)")
    unplaced = report.get("unplaced") or []
    if unplaced:
        shown = ", ".join(unplaced[:8]) + (f", ... ({len(unplaced) - 8} more)" if len(unplaced) > 8 else "")
        print(f"convert_sgb_checkpoint: warning: --allow-unplaced: {len(unplaced)} tensors of {args.input} have "
              f"no place in the {what} and are NOT in {args.output}: {shown}", file=sys.stderr)
    missing = report.get("missing") or []
    if metadata is not None and missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing) - 8} more)" if len(missing) > 8 else "")
        print(f"convert_sgb_checkpoint: warning: {len(missing)} tensors of the {what} are not in {args.input} "
              f"(they keep their initialisation when loaded): {shown}", file=sys.stderr)
    print(f"wrote {args.output}")
    return 0
