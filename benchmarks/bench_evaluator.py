"""Benchmark: vectorised streaming evaluator vs the literal per-image reference loop.

Random ground truth and predictions in which every ordered pair of predicted objects is scored
(N * (N - 1) rows x (P + 1) predicates, as SGB's SGDet/SGCls/PredCls outputs). Reports both
run times, their ratio, whether every metric is identical (==), and the memory the streaming
records hold (tracemalloc). Images are generated lazily and the generation time is excluded.

    python benchmarks/bench_evaluator.py --images 1000 --mode sgdet
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import pathlib
import sys
import time
import tracemalloc

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sgg.evaluation import SceneGraphEvaluator  # noqa: E402


def _load_reference():
    spec = importlib.util.spec_from_file_location("reference_sgg_eval",
                                                  ROOT / "benchmarks" / "reference_sgg_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _long_tail(num: int, power: float) -> np.ndarray:
    prob = 1.0 / np.arange(1, num + 1) ** power
    return prob / prob.sum()


def make_image(rng: np.random.Generator, mode: str, num_boxes: int, num_predicates: int,
               num_classes: int = 150):
    """One random (ground truth, prediction) pair, VG-like: long-tailed object classes and
    predicates, 4-25 objects, up to 25 relations (sometimes a duplicate pair with a second
    predicate). SGDet: ``num_boxes`` noisy detections around the GT objects, 70% with the right
    class; PredCls/SGCls: the GT boxes. Every ordered pair of predicted objects is scored; the GT
    predicate gets a boost on pairs that cover a GT relation, so the recalls are not trivial."""
    g = int(rng.integers(4, 26))
    xy = rng.uniform(0, 500, (g, 2))
    wh = rng.uniform(10, 200, (g, 2))
    gt_boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    gt_labels = rng.choice(num_classes, g, p=_long_tail(num_classes, 0.8)) + 1
    num_rels = int(rng.integers(0, min(25, g * (g - 1)) + 1))
    pair_ids = rng.choice(g * (g - 1), num_rels, replace=False) if num_rels else np.zeros(0, int)
    subj = pair_ids // (g - 1)
    obj = pair_ids % (g - 1)
    obj = obj + (obj >= subj)
    predicates = rng.choice(num_predicates, num_rels, p=_long_tail(num_predicates, 1.2)) + 1
    relations = np.column_stack([subj, obj, predicates])
    if num_rels and rng.random() < 0.3:  # a duplicate pair with another predicate
        extra = relations[:1].copy()
        extra[0, 2] = rng.integers(1, num_predicates + 1)
        relations = np.concatenate([relations, extra])
    gt = {"boxes": gt_boxes, "labels": gt_labels, "relations": relations.astype(np.int64)}

    if mode == "sgdet":
        n = num_boxes
        src = rng.integers(0, g, n)
        scale = np.concatenate([wh, wh], 1)[src]
        boxes = gt_boxes[src] + rng.normal(0, 0.08, (n, 4)) * scale
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.random(n) < 0.7, gt_labels[src], rng.integers(1, num_classes + 1, n))
    else:
        n = g
        src = np.arange(g)
        boxes = gt_boxes.copy()
        labels = gt_labels.copy() if mode == "predcls" else np.where(
            rng.random(n) < 0.6, gt_labels, rng.integers(1, num_classes + 1, n))
    scores = rng.uniform(0.05, 1.0, n).astype(np.float32)
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    pairs = np.column_stack([ii, jj]).astype(np.int64)
    logits = rng.normal(0, 2, (len(pairs), num_predicates + 1)).astype(np.float32)
    logits[:, 0] += 2.0
    lookup = np.zeros((g, g), dtype=np.int64)
    lookup[relations[:, 0], relations[:, 1]] = relations[:, 2]
    gt_pred = lookup[src[ii], src[jj]]
    rows = np.flatnonzero(gt_pred)
    logits[rows, gt_pred[rows]] += 3.0
    rel_scores = np.exp(logits - logits.max(1, keepdims=True))
    rel_scores /= rel_scores.sum(1, keepdims=True)
    triplet = rel_scores[:, 1:].max(1) * scores[pairs[:, 0]] * scores[pairs[:, 1]]
    order = np.argsort(-triplet, kind="stable")
    pred = {"boxes": boxes.astype(np.float32), "labels": labels.astype(np.int64), "scores": scores,
            "rel_pairs": pairs[order], "rel_scores": rel_scores[order]}
    return gt, pred


def make_zeroshot(seed: int, num_predicates: int, num: int = 6000) -> np.ndarray:
    """A VG-sized zero-shot list (subj class, obj class, predicate) among the frequent classes,
    so a fair share of the GT rows are zero-shot."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(30 * 30 * num_predicates, num, replace=False)
    return np.column_stack([codes // (30 * num_predicates) + 1, (codes // num_predicates) % 30 + 1,
                            codes % num_predicates + 1]).astype(np.int64)


class LazyImages:
    """Regenerates the same images on every pass and measures its own generation time."""

    def __init__(self, args):
        self.args = args
        self.gen_time = 0.0

    def __iter__(self):
        rng = np.random.default_rng(self.args.seed)
        for _ in range(self.args.images):
            t = time.perf_counter()
            item = make_image(rng, self.args.mode, self.args.boxes, self.args.predicates)
            self.gen_time += time.perf_counter() - t
            yield item


def run_vectorised(images: LazyImages, args, zeroshot, batch: int = 8):
    evaluator = SceneGraphEvaluator(args.mode, args.predicates, zeroshot_triplets=zeroshot)
    start = time.perf_counter()
    gts, preds = [], []
    for gt, pred in images:
        gts.append(gt)
        preds.append(pred)
        if len(gts) == batch:
            evaluator.process(gts, preds)
            gts, preds = [], []
    if gts:
        evaluator.process(gts, preds)
    metrics = evaluator.evaluate()
    return metrics, time.perf_counter() - start, evaluator


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--boxes", type=int, default=40, help="predicted boxes per image (SGDet)")
    parser.add_argument("--predicates", type=int, default=50)
    parser.add_argument("--mode", default="sgdet", choices=["predcls", "sgcls", "sgdet"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)

    zeroshot = make_zeroshot(args.seed + 1, args.predicates)
    print(f"images={args.images} mode={args.mode} boxes={args.boxes} predicates={args.predicates} "
          f"seed={args.seed}")

    images = LazyImages(args)
    ours, total, evaluator = run_vectorised(images, args, zeroshot)
    t_ours = total - images.gen_time
    print(f"vectorised evaluator: {t_ours:8.2f} s  ({1e3 * t_ours / args.images:.3f} ms/image)")

    records = evaluator.records
    rec_bytes = sum(r.nbytes for r in records)
    del evaluator, records
    images = LazyImages(args)
    tracemalloc.start()
    ev = SceneGraphEvaluator(args.mode, args.predicates)
    base = tracemalloc.get_traced_memory()[0]
    for gt, pred in images:
        ev.process([gt], [pred])
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"streaming records: {held / 2**20:.1f} MiB held (tracemalloc), arrays {rec_bytes / 2**20:.1f} MiB, "
          f"{held / args.images / 1024:.2f} KiB/image")
    del ev

    if args.skip_reference:
        return 0
    reference = _load_reference()
    images = LazyImages(args)
    start = time.perf_counter()
    first, second = itertools.tee(images)  # zip() consumes both in lockstep: no buffering
    ref = reference.reference_evaluate((gt for gt, _ in first), (pred for _, pred in second),
                                       args.mode, args.predicates, zeroshot_triplets=zeroshot)
    t_ref = time.perf_counter() - start - images.gen_time
    print(f"reference loop:       {t_ref:8.2f} s  ({1e3 * t_ref / args.images:.3f} ms/image)")
    print(f"speed-up: {t_ref / t_ours:.1f}x")
    keys = sorted(k for k in ref if k != "mode")
    diff = [k for k in keys if not _same(ours.get(k), ref[k])]
    missing = sorted(set(ours) - set(ref) - {"mode"})
    print(f"metrics identical: {not diff and not missing} ({len(keys)} keys compared"
          + (f"; differ: {diff}" if diff else "") + (f"; only ours: {missing}" if missing else "") + ")")
    for k in ("R@20", "R@50", "R@100", "ngR@100", "mR@100", "ngmR@100", "zR@100", "A@100", "F@100"):
        if k in ours:
            print(f"  {k:>9}: {ours[k]:.6f}")
    return 0 if not diff and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
