"""Convert a dataset folder between the VG150 (SGB h5) and COCO scene-graph JSON formats.

    python tools/convert_dataset.py --to coco_json --src datasets/synthvg_tiny --out datasets/mydata
    python tools/convert_dataset.py --to vg150 --src datasets/mydata --out datasets/mydata_vg

VG150 -> coco_json writes <out>/{train,val,test}/_annotations.coco.json with the splits as the VG150
loader yields them (val = the first --num-val-images train images; 0 writes no val file, so the
loader cuts val from train at load time as for VG150), images hard-linked (copied across file
systems). coco_json -> VG150 writes the h5, dicts json, image_data.json and VG_100K/ (split 0 =
val then train, 2 = test). Both carry depth/, zeroshot_triplet.pytorch, predicate_hierarchy.json and
synthvg_config.json over. Rules: sgg/data/datasets/coco_json.py.
"""
from __future__ import annotations

import argparse

from sgg.data.datasets.coco_json import coco_json_to_vg150, vg150_to_coco_json


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to", required=True, choices=["coco_json", "vg150"], help="format to write")
    p.add_argument("--src", required=True, help="dataset folder to read (the other format)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num-val-images", type=int, default=5000,
                   help="--to coco_json: train images written as val/ (default 5000 as SGB; 0: no val file)")
    args = p.parse_args(argv)
    if args.to == "coco_json":
        sizes = vg150_to_coco_json(args.src, args.out, num_val_im=args.num_val_images)
    else:
        sizes = coco_json_to_vg150(args.src, args.out)
    print(f"{args.src} -> {args.out} ({args.to}): " + ", ".join(f"{s} {n} images" for s, n in sizes.items()))
    if args.to == "vg150" and "val" in sizes:
        print(f"  load it with DATASETS.NUM_VAL_IMAGES {sizes['val']} (the val images come first)")
    return 0
