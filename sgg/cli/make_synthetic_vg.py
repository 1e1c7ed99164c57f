"""Write a SynthVG dataset (VG150 file layout + depth maps + zero-shot triplets).

Example:
    python tools/make_synthetic_vg.py --profile small --out datasets/synthvg_small
    python tools/make_synthetic_vg.py --profile tiny --format coco_json --out datasets/mydata
"""
from __future__ import annotations

import argparse
import json

from sgg.data.synthvg import PROFILES, generate_synthvg


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="small", choices=sorted(PROFILES))
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--format", default="vg150", choices=["vg150", "coco_json"],
                   help="vg150: the SGB h5 + json files; coco_json: <out>/{train,test}/_annotations.coco.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--image-size", default=None,
                   help="N (square N x N images) or MIN,MAX (width and height each in [MIN, MAX])")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--num-predicates", type=int, default=None)
    p.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    size = None
    if args.image_size:
        parts = [int(v) for v in args.image_size.split(",")]
        size = parts[0] if len(parts) == 1 else tuple(parts)
    s = generate_synthvg(args.out, profile=args.profile, seed=args.seed, workers=args.workers,
                         progress=not args.no_progress, num_images=args.num_images, image_size=size,
                         num_classes=args.num_classes, num_predicates=args.num_predicates, format=args.format)
    if args.json:
        print(json.dumps(s, indent=1))
        return s
    print(f"SynthVG {s['profile']} (seed {s['seed']}) -> {s['out_dir']} ({args.format})")
    print(f"  {s['num_images']} images, {s['num_classes']} object classes, {s['num_predicates']} predicates")
    for name, d in s["splits"].items():
        print(f"  {name:5s}: {d['images']:6d} images {d['objects']:7d} objects {d['relations']:7d} relations"
              f" ({d['images_without_relations']} images without relations)")
    counts = sorted(s["predicate_count"].items(), key=lambda kv: -kv[1])
    total = max(sum(c for _, c in counts), 1)
    coarse = set(s["coarse_predicates"])
    print("  predicates (count, share, * = coarse):")
    for p, c in counts:
        print(f"    {'*' if p in coarse else ' '} {p:14s} {c:7d} {100.0 * c / total:6.2f}%")
    print(f"  zero-shot test triplets: {s['num_zeroshot_triplets']} "
          f"({s['num_withheld_triplets']} withheld from train, {s['num_withheld_relations']} train relations dropped)")
    print(f"  time: {s['seconds']:.1f}s ({s['num_images'] / max(s['seconds'], 1e-9):.0f} images/s)")
    return s
