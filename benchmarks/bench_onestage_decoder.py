"""Benchmark: the one-stage decoder alone (fields -> SceneGraphs), no network, no dataset.

Random fields shaped like the RN50 model's at 512x512 (32x32 grid, 150 classes, 50 predicates);
``--rel-fraction`` sets the fraction of (predicate, cell) entries above ``--rel-threshold`` (a
trained model gives few, a random one nearly all), ``--obj-fraction`` the same for the object
heatmap. Prints ms per batch, images/s, and the candidates / objects / pairs per image.

    python benchmarks/bench_onestage_decoder.py --device cuda
    python benchmarks/bench_onestage_decoder.py --device cpu --batch-sizes 1 16 --iters 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sgg.modeling.onestage.decoder import decode_fields  # noqa: E402


def logits_with_fraction(shape, fraction: float, threshold: float, gen: torch.Generator) -> torch.Tensor:
    """Logits of which about ``fraction`` have sigmoid > ``threshold``."""
    u = torch.rand(shape, generator=gen)
    t = torch.logit(torch.tensor(threshold)).item()
    return torch.where(u < fraction, t + 0.1 + 3 * torch.rand(shape, generator=gen),
                       t - 0.1 - 3 * torch.rand(shape, generator=gen))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--classes", type=int, default=150)
    ap.add_argument("--predicates", type=int, default=50)
    ap.add_argument("--rel-fraction", type=float, default=0.02)
    ap.add_argument("--obj-fraction", type=float, default=0.01)
    ap.add_argument("--rel-threshold", type=float, default=0.1)
    ap.add_argument("--mode", default="sgdet", choices=["sgdet", "sgcls", "predcls"])
    ap.add_argument("--no-pair-filter", action="store_true")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    G, C, P = args.grid, args.classes, args.predicates
    print(f"device {device}, torch {torch.__version__}, grid {G}x{G}, {C} classes, {P} predicates, "
          f"mode {args.mode}, rel fraction {args.rel_fraction}, threshold {args.rel_threshold}")
    print(f"  {'batch':>5} {'ms/batch':>9} {'images/s':>9} {'rel cand.':>10} {'objects':>8} {'pairs':>7}")
    for bs in args.batch_sizes:
        f = {"obj_logits": logits_with_fraction((bs, C, G, G), args.obj_fraction, 0.3, gen),
             "obj_offset": torch.rand(bs, 2, G, G, generator=gen),
             "obj_size": 1 + torch.rand(bs, 2, G, G, generator=gen) * 6,
             "rel_logits": logits_with_fraction((bs, P, G, G), args.rel_fraction, args.rel_threshold, gen),
             "rel_subj": torch.randn(bs, P, 2, G, G, generator=gen) * 4,
             "rel_obj": torch.randn(bs, P, 2, G, G, generator=gen) * 4}
        f = {k: v.to(device) for k, v in f.items()}
        sizes = [(16 * G, 16 * G)] * bs
        boxes = [torch.tensor([[16.0 * (k % 8) * 4, 16.0 * (k // 8) * 4, 16.0 * (k % 8) * 4 + 60,
                                16.0 * (k // 8) * 4 + 60] for k in range(20)], device=device)] * bs
        labels = [torch.arange(1, 21, device=device)] * bs
        kw = dict(mode=args.mode, gt_boxes=boxes, gt_labels=labels, rel_threshold=args.rel_threshold,
                  pair_score_filter=not args.no_pair_filter)
        for _ in range(args.warmup):
            decode_fields(f, sizes, **kw)
        times = []
        for _ in range(args.iters):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            graphs = decode_fields(f, sizes, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        cand = int((f["rel_logits"].sigmoid() > args.rel_threshold).sum()) / bs
        print(f"  {bs:>5} {1e3 * med:>9.2f} {bs / med:>9.1f} {cand:>10.0f} "
              f"{sum(len(g) for g in graphs) / bs:>8.1f} {sum(g.num_relations for g in graphs) / bs:>7.0f}")


if __name__ == "__main__":
    main()
