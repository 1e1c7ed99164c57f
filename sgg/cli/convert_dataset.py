"""Convert a dataset folder between the VG150 (SGB h5) and COCO scene-graph JSON formats, or from
Open Images V6 / GQA200 / PSG folders to either.

    python tools/convert_dataset.py --to coco_json --src datasets/synthvg_tiny --out datasets/mydata
    python tools/convert_dataset.py --to vg150 --src datasets/mydata --out datasets/mydata_vg
    python tools/convert_dataset.py --to coco_json --src datasets/openimages/open_image_v6 --out datasets/oi_json

VG150 -> coco_json writes <out>/{train,val,test}/_annotations.coco.json with the splits as the VG150
loader yields them (val = the first --num-val-images train images; 0 writes no val file, so the
loader cuts val from train at load time as for VG150), images hard-linked (copied across file
systems). coco_json -> VG150 writes the h5, dicts json, image_data.json and VG_100K/ (split 0 =
val then train, 2 = test). Both carry depth/, zeroshot_triplet.pytorch, predicate_hierarchy.json and
synthvg_config.json over. Rules: sgg/data/datasets/coco_json.py.

An oiv6 / gqa200 / psg folder (the format is recognised from its files) is read by its own reader
and written as coco_json (`folder_to_coco_json`: train = the format's whole train pool, val only
when the format has a val file, ids renumbered when they repeat across splits); --to vg150 goes
through that coco_json (in a temporary folder beside --out).
"""
from __future__ import annotations

import argparse

import os
import tempfile

from sgg.data.catalog import folder_format
from sgg.data.datasets import coco_json
from sgg.data.datasets.coco_json import coco_json_to_vg150, folder_to_coco_json, vg150_to_coco_json


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to", required=True, choices=["coco_json", "vg150"], help="format to write")
    p.add_argument("--src", required=True, help="dataset folder to read (VG150, coco_json, oiv6, gqa200 or psg)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num-val-images", type=int, default=5000,
                   help="--to coco_json: train images written as val/ (default 5000 as SGB; 0: no val file)")
    args = p.parse_args(argv)
    fmt = folder_format(args.src)
    if fmt is coco_json and args.to == "coco_json" or fmt is None and args.to == "vg150":
        p.error(f"--src {args.src} already is a {args.to} folder")
    if fmt is None:
        sizes = vg150_to_coco_json(args.src, args.out, num_val_im=args.num_val_images)
    elif fmt is coco_json:
        sizes = coco_json_to_vg150(args.src, args.out)
    elif args.to == "coco_json":
        sizes = folder_to_coco_json(args.src, fmt.FORMAT, args.out)
    else:
        parent = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=".convert-") as tmp:
            folder_to_coco_json(args.src, fmt.FORMAT, tmp)
            sizes = coco_json_to_vg150(tmp, args.out)
    print(f"{args.src} -> {args.out} ({args.to}): " + ", ".join(f"{s} {n} images" for s, n in sizes.items()))
    if args.to == "vg150" and "val" in sizes:
        print(f"  load it with DATASETS.NUM_VAL_IMAGES {sizes['val']} (the val images come first)")
    return 0
