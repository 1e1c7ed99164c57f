"""Check a dataset (VG150, coco_json, oiv6, gqa200 or psg) before a long run: every problem at once, with the file, the
row / image id and the fix. Exit code 1 when there is any error, 0 otherwise (warnings, such as images
without relations, do not fail).

    # the datasets of a config (DATASETS.TRAIN / VAL / TEST under DATASETS.DATA_DIR)
    python tools/validate_dataset.py --config-file configs/synthvg/motifs_predcls.yaml
    python tools/validate_dataset.py --config-file CFG --split test --no-images DATASETS.DATA_DIR /data
    # a folder without a config
    python tools/validate_dataset.py --data-dir datasets --name synthvg_small --depth
    python tools/validate_dataset.py --data-dir datasets/vg          # the folder holding the h5 itself

Checks (see sgg/data/validate.py): the h5 (datasets, index ranges, boxes after SGB's decode and
rescale, labels / predicates against the dicts json, relation indices, split values), the dicts
json, image_data.json (row count == h5 rows), that every selected split loads >= 1 image (an empty
train or test split is an error with its cause, e.g. --num-val-images / DATASETS.NUM_VAL_IMAGES
taking every train image), every image of the selected splits (present, decodable, of the size
image_data.json says; --no-images skips this slow part) and, with --depth or INPUT.LOAD_DEPTH, the
depth maps. A coco_json folder (<folder>/{train,val,test}/_annotations.coco.json): the reader's own
checks on each selected split's file (dangling / undeclared / duplicate ids, boxes outside the image,
...; each problem as `file: id: message: fix`), non-empty splits, the image files. An Open Images
V6, GQA200 or PSG folder: each selected split built by its reader (the first problem of each file as
`file: where: message: fix`), non-empty splits, the image files.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Tuple

from sgg.data.catalog import VG_LAYOUTS, DatasetFiles, folder_dataset_files, folder_format, get_dataset_files, split_name
from sgg.data.validate import SPLITS, validate_dataset


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to check (a config, or a folder)")
    src.add_argument("--config-file", default="", help="experiment YAML (its DATASETS.* and INPUT.LOAD_DEPTH)")
    src.add_argument("--data-dir", default="", help="DATA_DIR (with --name) or the dataset folder itself")
    src.add_argument("--name", default="", help="dataset folder name under --data-dir, e.g. synthvg_small or "
                     "VG_stanford_filtered_with_attribute (an SGB name)")
    p.add_argument("--split", default="all", choices=list(SPLITS) + ["all"],
                   help="whose image / depth files to check and which splits must not be empty (the h5 and "
                   "json are always checked whole)")
    p.add_argument("--no-images", action="store_true", help="skip decoding the image files (the slow part)")
    p.add_argument("--depth", action="store_true", help="check the depth maps too (on with INPUT.LOAD_DEPTH)")
    p.add_argument("--max-images", type=int, default=None, help="check at most N image / depth files per dataset")
    p.add_argument("--num-val-images", type=int, default=None,
                   help="size of the val split (default: DATASETS.NUM_VAL_IMAGES, 5000)")
    p.add_argument("--workers", type=int, default=None, help="threads decoding images (default min(8, cpus))")
    p.add_argument("--max-lines", type=int, default=20, help="problem lines printed per kind (the count is exact)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (with --config-file)")
    args = p.parse_args(argv)
    if bool(args.config_file) == bool(args.data_dir):
        p.error("give either --config-file CFG or --data-dir DIR [--name NAME]")
    if args.opts and not args.config_file:
        p.error(f"KEY VALUE overrides need --config-file (got {args.opts[:4]})")
    if len(args.opts) % 2:
        p.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    return args


def _folder_files(data_dir: str, name: str) -> DatasetFiles:
    """The files of a dataset folder given without a config."""
    if name:
        try:
            base, _ = split_name(name)
        except KeyError:
            base = name
        return get_dataset_files(f"{base}_train", data_dir)
    root = data_dir
    fmt = folder_format(root)
    if fmt is not None:
        return folder_dataset_files(fmt, root, "train")
    h5, dicts = VG_LAYOUTS[0]
    for cand_h5, cand_dicts in VG_LAYOUTS:
        if os.path.exists(os.path.join(root, cand_h5)):
            h5, dicts = cand_h5, cand_dicts
            break
    return DatasetFiles(name=os.path.basename(os.path.normpath(root)), split="train", root=root,
                        roidb_file=os.path.join(root, h5), dict_file=os.path.join(root, dicts),
                        image_file=os.path.join(root, "image_data.json"), img_dir=os.path.join(root, "VG_100K"),
                        depth_dir=os.path.join(root, "depth"),
                        zeroshot_file=os.path.join(root, "zeroshot_triplet.pytorch"))


def _targets(args) -> Tuple[List[Tuple[DatasetFiles, List[str]]], int, bool]:
    """[(files, splits whose images to check)], num_val_im, depth."""
    wanted = list(SPLITS) if args.split == "all" else [args.split]
    if args.config_file:
        from sgg.config import load_config

        cfg = load_config(args.config_file, args.opts)
        by_root: Dict[str, Tuple[DatasetFiles, List[str]]] = {}
        for key, split in (("TRAIN", "train"), ("VAL", "val"), ("TEST", "test")):
            if split not in wanted:
                continue
            for name in cfg.DATASETS[key]:
                files = get_dataset_files(name, cfg.DATASETS.DATA_DIR)
                entry = by_root.setdefault(files.roidb_file or files.root, (files, []))
                if files.split not in entry[1]:
                    entry[1].append(files.split)
        num_val = cfg.DATASETS.NUM_VAL_IMAGES if args.num_val_images is None else args.num_val_images
        depth = args.depth or bool(cfg.INPUT.LOAD_DEPTH)
        return list(by_root.values()), num_val, depth
    files = _folder_files(args.data_dir, args.name)
    return [(files, wanted)], (5000 if args.num_val_images is None else args.num_val_images), args.depth


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    try:
        targets, num_val, depth = _targets(args)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    if not targets:
        print(f"error: the config lists no dataset for --split {args.split}", file=sys.stderr)
        return 1
    code = 0
    for k, (files, splits) in enumerate(targets):
        if k:
            print("\n" + "=" * 100 + "\n")
        report = validate_dataset(files, check_images=not args.no_images,
                                  depth_dir=files.depth_dir if depth else None, max_images=args.max_images,
                                  splits=splits, num_val_im=num_val, workers=args.workers,
                                  progress=not args.no_progress)
        print(f"[{os.path.basename(os.path.normpath(files.root))}: image files of {', '.join(splits)}]")
        print(report.format(max_per_kind=args.max_lines))
        code = max(code, report.exit_code)
    return code
