"""Encode a folder of depth maps for the STDG depth teacher (sgg/data/depth_encoding.py).

Reads every ``*.png`` (16-bit, millimetres by default) and ``*.npy`` (metres by default) depth map
of --depth-dir and writes ``--out/{stem}.npy``: float16 ``[3, H, W]``, every channel in [0, 1]
(``hha``: disparity, height above the lowest point, angle of the surface normal with the vertical;
``normalized``: depth / max depth, x3). Missing depth (0) takes the nearest valid depth.

The mapper reads such files as ready encodings when they are the dataset's depth maps and
INPUT.DEPTH_ENCODING is set (saves the per-sample encoding time), e.g.::

    python tools/encode_depth.py --depth-dir datasets/vg/depth_mm --out datasets/vg/depth --mode hha

(the dataset's depth folder is ``<DATASETS.DATA_DIR>/<dataset>/depth``; keep one map per image
there). An unreadable file stops the run with its name.
"""
from __future__ import annotations

import argparse
import sys

from sgg.data.depth_encoding import ENCODINGS, encode_depth_folder


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth-dir", required=True, help="folder of {image_id}.png (16-bit) / .npy depth maps")
    p.add_argument("--out", required=True, help="output folder of {image_id}.npy encodings (created)")
    p.add_argument("--mode", default="hha", choices=ENCODINGS)
    p.add_argument("--png-scale", type=float, default=0.001, help="PNG value -> metres (default: millimetres)")
    p.add_argument("--npy-scale", type=float, default=1.0, help=".npy value -> metres (default: metres)")
    p.add_argument("--focal", type=float, default=0.0, help="HHA focal length in pixels (0: the image width)")
    p.add_argument("--min-depth", type=float, default=1.0, help="HHA disparity = min(1, MIN_DEPTH / depth)")
    p.add_argument("--overwrite", action="store_true", help="re-encode files already in --out")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    try:
        res = encode_depth_folder(args.depth_dir, args.out, args.mode, focal=args.focal or None,
                                  min_depth=args.min_depth, png_scale=args.png_scale, npy_scale=args.npy_scale,
                                  overwrite=args.overwrite, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{res['written']} depth maps encoded ({args.mode}) into {args.out}"
          + (f", {res['skipped']} already there" if res["skipped"] else ""))
    return 0
