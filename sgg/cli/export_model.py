"""Export a trained one-stage model's field network (TorchScript, or ONNX when installed).

    python tools/export_model.py --config-file configs/synthvg/corf.yaml --weights output/corf/model_final.pth \
        --output corf_fields.pt [--format torchscript|onnx] [--image-size 512 512] [KEY VALUE ...]

The exported graph maps a normalised image batch [B, 3, H, W] to the seven field tensors
(obj_logits, obj_offset, obj_size, rel_logits, rel_subj, rel_obj, rel_scale; see sgg/export.py);
preprocessing and decoding stay in Python (sgg.modeling.onestage.decoder.decode_fields). The class
counts come from the checkpoint, so no dataset is needed. The EMA weights are exported when the
checkpoint has them (what validation and tools/relation_test_net.py evaluate; --no-ema for the raw
weights). After writing, the export is reloaded and compared with the PyTorch model on a random
input; the maximum absolute difference is printed and a difference above --tolerance fails.
"""
from __future__ import annotations

import argparse


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the training config (MODEL.ONESTAGE.*, INPUT.*)")
    p.add_argument("--weights", required=True, help="checkpoint file, or an OUTPUT_DIR (its last_checkpoint)")
    p.add_argument("--output", required=True, help="output file (.pt for TorchScript, .onnx for ONNX)")
    p.add_argument("--format", default=None, choices=["torchscript", "onnx"],
                   help="default: onnx for a .onnx output, else torchscript")
    p.add_argument("--image-size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"),
                   help="example input size, a multiple of 32 (the graph runs at other sizes too)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even if the file has EMA ones")
    p.add_argument("--device", default="cpu", help="device to trace on (cpu keeps the file portable)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |export - model| accepted by the check")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def build_from_checkpoint(cfg, weights: str, prefer_ema: bool = True):
    """(OneStageSGG with the checkpoint's weights, path actually read), through the one inference
    loader (:func:`sgg.engine.loading.load_trained_model`)."""
    from sgg.engine.loading import load_trained_model

    if cfg.MODEL.META_ARCHITECTURE != "OneStageSGG":
        raise SystemExit(f"error: the config has MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: "
                         f"only the one-stage model (OneStageSGG) is exported; the two-stage model has "
                         f"data-dependent control flow (proposals, NMS, pair sampling)")
    trained = load_trained_model(cfg, weights, prefer_ema=prefer_ema)
    if trained.ema:
        print(f"using the EMA weights of {trained.weights}")
    return trained.model, trained.weights


def main(argv=None, prog=None) -> float:
    args = parse_args(argv, prog)
    import torch

    from sgg.config import load_config
    from sgg.export import export_onestage, load_exported, verify_export

    cfg = load_config(args.config_file, args.opts, freeze=False)
    cfg.MODEL.DEVICE = args.device
    cfg.freeze()
    model, path = build_from_checkpoint(cfg, args.weights, prefer_ema=not args.no_ema)
    model.to(torch.device(args.device)).eval()
    fmt = args.format or ("onnx" if args.output.endswith(".onnx") else "torchscript")
    try:
        export_onestage(model, args.output, tuple(args.image_size), format=fmt)
    except (ImportError, ValueError) as e:  # onnx missing; an image size the model cannot take
        raise SystemExit(f"error: {e}") from e
    exported = load_exported(args.output, args.device)
    diff = verify_export(model, exported)
    h, w = args.image_size
    print(f"exported {path} -> {args.output} ({fmt}, traced at {h}x{w}, {model.num_classes} classes, "
          f"{model.num_predicates} predicates)")
    print(f"outputs: {', '.join(exported.metadata.get('fields', []))}")
    print(f"max |export - model| on a random {h}x{w} input: {diff:.3g}")
    if not diff <= args.tolerance:
        raise SystemExit(f"error: the export differs from the model by {diff:.3g} > --tolerance {args.tolerance}")
    return diff
