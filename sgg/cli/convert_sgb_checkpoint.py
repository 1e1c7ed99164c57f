"""Convert a Faster R-CNN checkpoint between Scene-Graph-Benchmark (maskrcnn_benchmark) and sgg names.

    # SGB -> sgg (shape-checked against the config's detector when --config-file / overrides are given)
    python tools/convert_sgb_checkpoint.py --input checkpoints/pretrained_faster_rcnn/model_final.pth \
        --output checkpoints/detector_sgg.pth --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml
    # sgg -> SGB (a detector trained with tools/detector_train_net.py, for SGB's code)
    python tools/convert_sgb_checkpoint.py --reverse --input output/detector/model_final.pth \
        --output model_final_sgb.pth

Conversion is not needed to use an SGB file in sgg: MODEL.PRETRAINED_DETECTOR_CKPT reads it
directly. The output is ``{"model": state_dict}`` (with a ``.sha256`` beside it). Anchor buffers
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
        model_state = None
        if args.config_file or args.opts:
            cfg = load_config(args.config_file, args.opts)
            model_state = build_detector(cfg).state_dict()
        report = convert_checkpoint_file(args.input, args.output, reverse=args.reverse,
                                         model_state=model_state, prefix=args.prefix,
                                         allow_unplaced=args.allow_unplaced)
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
              f"no place in the detector and are NOT in {args.output}: {shown}", file=sys.stderr)
    print(f"wrote {args.output}")
    return 0
