"""Predict scene graphs on your own images and draw them.

    python tools/predict.py --config-file configs/synthvg/motifs_predcls.yaml \\
        --weights output/motifs_predcls --input photos/ --output predictions/ [--batch-size 4] \\
        [--top-k 20] [--score-threshold 0.0] [--device cpu] [KEY VALUE ...]

For every image (a file, or the images directly inside a folder) it writes
``OUTPUT/<image stem>.json`` (objects and the top-k relations, see
``sgg.engine.predict.graph_to_json``) and ``OUTPUT/<image stem>.png`` (the upscaled image with its
labelled boxes, the scene graph of the top relations drawn as a graph, and the ranked relation
list: ``sgg.utils.visualize.draw_scene_graph``). When several inputs share a stem (``a.jpg``, ``a.png``) their
outputs are named ``<stem>_<extension>`` (``a_jpg.json``, ``a_png.json``).

``--weights`` is a checkpoint file or a training OUTPUT_DIR (its ``last_checkpoint``); without it
MODEL.WEIGHT is used. Prediction uses the SGDet protocol (user images have no GT boxes).
An image that cannot be read is reported by name and skipped; the exit status is then 1.

``--boxes BOXES.json`` (two-stage models): relations among your own boxes instead of detected ones.
The file maps each input image's file name (or its path as listed) to its boxes, xyxy in pixels of
the original image, and optionally one label (class name of the checkpoint, or class id) per box::

    {"photo1.jpg": {"boxes": [[10, 20, 200, 310], [150, 40, 380, 300]], "labels": ["person", "horse"]},
     "photo2.jpg": {"boxes": [[0, 0, 50, 60], [30, 10, 90, 80]]}}

(a list ``[{"image": "photo1.jpg", "boxes": [...], "labels": [...]}, ...]`` is accepted too). With
labels an image runs as in PredCls (object scores 1), without as in SGCls (the model classifies the
boxes; a model trained in PredCls has no object classifier, so the detector's box head does).
Object ``id`` i of the output JSON is box i of the file. Every input image needs an entry; entries
of images not among the inputs are ignored with a warning.
"""
import argparse
import json
import logging
import os
import sys
from collections import Counter

from sgg.checkpoint import CheckpointError
from sgg.config import ConfigError, load_config
from sgg.engine.predict import Predictor, check_boxes, graph_to_json, list_images, read_image
from sgg.utils.logger import setup_logger
from sgg.utils.visualize import draw_scene_graph, save_png

logger = logging.getLogger(__name__)


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Predict scene graphs on your own images (SGDet, or among given --boxes) and "
                                "draw them.",
        epilog="Overrides: KEY VALUE pairs after the options, e.g. MODEL.ROI_HEADS.DETECTIONS_PER_IMG 40.")
    parser.add_argument("--config-file", "--config_file", dest="config_file", required=True, metavar="FILE",
                        help="the model's (training) config YAML")
    parser.add_argument("--weights", default="", metavar="CKPT_OR_DIR",
                        help="checkpoint file, or a training OUTPUT_DIR holding last_checkpoint (default: MODEL.WEIGHT)")
    parser.add_argument("--input", required=True, metavar="IMAGE_OR_FOLDER",
                        help="an image file or a folder of images")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for <stem>.json and <stem>.png")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--top-k", type=int, default=20,
                        help="relations kept in the JSON and listed in the PNG, best first (default 20)")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="objects with a lower score are left out of the JSON unless a kept relation uses "
                             "them (default 0: all)")
    parser.add_argument("--boxes", default="", metavar="BOXES.json",
                        help="relations among your own boxes (two-stage models): JSON {image file name: {\"boxes\": "
                             "[[x1,y1,x2,y2],...], \"labels\": [names or ids] (optional: without them the model "
                             "classifies the boxes)}}")
    parser.add_argument("--device", default="", help="overrides MODEL.DEVICE (e.g. cpu, cuda, cuda:1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.top_k < 0:
        parser.error(f"--top-k must be >= 0, got {args.top_k}")
    return args


def output_stems(paths):
    """``{path: output stem}``: the file stem, or ``<stem>_<ext>`` where stems collide."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = Counter(stems)
    out = {}
    for p, s in zip(paths, stems):
        ext = os.path.splitext(p)[1].lstrip(".").lower()
        out[p] = f"{s}_{ext}" if counts[s] > 1 else s
    return out


def read_boxes_file(path, paths, class_names):
    """``{image path: (boxes [N, 4], labels [N] or None)}`` for every path of ``paths`` from the
    ``--boxes`` JSON (module docstring). Errors name the file, the image and the box index."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"boxes file not found: '{path}' (--boxes)")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} (--boxes) is not valid JSON: {e}") from e
    layout = ('{"<image file name>": {"boxes": [[x1, y1, x2, y2], ...], "labels": [...] (optional)}} or '
              '[{"image": "<image file name>", "boxes": [...], "labels": [...]}, ...]')
    entries = []
    if isinstance(doc, dict):
        entries = list(doc.items())
    elif isinstance(doc, list):
        for k, e in enumerate(doc):
            if not isinstance(e, dict) or not isinstance(e.get("image"), str):
                raise ValueError(f"{path}: entry {k} has no \"image\" name; the layout is {layout}")
            entries.append((e["image"], e))
    else:
        raise ValueError(f"{path}: expected {layout}, got a JSON {type(doc).__name__}")
    by_key = {}
    for name, e in entries:
        if isinstance(e, list):  # {"img.jpg": [[x1, y1, x2, y2], ...]}: boxes only
            e = {"boxes": e}
        if not isinstance(e, dict) or "boxes" not in e:
            raise ValueError(f"{path}: image '{name}' has no \"boxes\" list; the layout is {layout}")
        if name in by_key:
            raise ValueError(f"{path}: image '{name}' is listed twice")
        by_key[name] = e
    out, missing, used = {}, [], set()
    for p in paths:
        key = next((k for k in (p, os.path.normpath(p), os.path.basename(p)) if k in by_key), None)
        if key is None:
            missing.append(os.path.basename(p))
            continue
        used.add(key)
        e = by_key[key]
        out[p] = check_boxes(e["boxes"], e.get("labels"), class_names, where=f"{path}: image '{key}'")
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise ValueError(f"{path} (--boxes) has no boxes for {len(missing)} of the {len(paths)} input images "
                         f"({shown}): with --boxes every input image needs an entry (keyed by its file name); "
                         f"give the others their boxes or leave them out of --input")
    unused = sorted(set(by_key) - used)
    if unused:
        logger.warning("%s: %d entries name no input image and are ignored: %s", path, len(unused),
                       ", ".join(unused[:10]))
    return out


def run(args) -> int:
    paths = list_images(args.input)
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: '{args.config_file}' (--config-file)")
    if args.boxes and not os.path.isfile(args.boxes):
        raise FileNotFoundError(f"boxes file not found: '{args.boxes}' (--boxes)")
    cfg = load_config(args.config_file, args.opts)
    if args.boxes and cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise ValueError(f"--boxes needs a two-stage model (MODEL.META_ARCHITECTURE GeneralizedRCNN); "
                         f"{cfg.MODEL.META_ARCHITECTURE} predicts its own objects: run without --boxes")
    predictor = Predictor(cfg, args.weights, device=args.device or None)
    given = read_boxes_file(args.boxes, paths, predictor.class_names) if args.boxes else None
    os.makedirs(args.output, exist_ok=True)
    stems = output_stems(paths)
    failed = []
    done = 0
    for start in range(0, len(paths), args.batch_size):
        chunk, images = [], []
        for p in paths[start:start + args.batch_size]:
            try:
                images.append(read_image(p))
                chunk.append(p)
            except (OSError, ValueError) as e:
                logger.error("skipping: %s", e)
                failed.append((p, str(e)))
        if not chunk:
            continue
        if given is None:
            graphs = predictor.predict(images, batch_size=len(images))
        else:
            graphs = predictor.predict_on_boxes(images, [given[p][0] for p in chunk], [given[p][1] for p in chunk],
                                                batch_size=len(images))
        for p, image, graph in zip(chunk, images, graphs):
            doc = graph_to_json(graph, predictor.class_names, predictor.predicate_names,
                                top_k_relations=args.top_k, score_threshold=args.score_threshold, image=p)
            base = os.path.join(args.output, stems[p])
            with open(base + ".json", "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            save_png(base + ".png", draw_scene_graph(image, doc, top_k=args.top_k))
            done += 1
            logger.info("%s -> %s.{json,png}: %d objects, %d relations", p, base, len(doc["objects"]),
                        len(doc["relations"]))
    logger.info("%d of %d images predicted into %s", done, len(paths), args.output)
    if failed:
        print(f"error: {len(failed)} of {len(paths)} images could not be read and were skipped:", file=sys.stderr)
        for _, msg in failed:
            print(f"  {msg}", file=sys.stderr)
        return 1
    return 0


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    setup_logger(None, name="sgg")
    try:
        return run(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
