"""Benchmark: two-stage Motifs model, PredCls training throughput and SGDet inference time.

Two measurements on random synthetic inputs in the mapper format (no dataset needed):

1. PredCls training throughput (images/s): the model of ``MODEL.META_ARCHITECTURE`` built by
   ``build_sgg_model`` with GT boxes and labels, the optimizer of ``sgg.solver.build_optimizer``,
   and the trainer's step (autocast forward, summed losses, backward, grad-norm clip
   ``SOLVER.GRAD_NORM_CLIP``, optimizer step; a GradScaler for float16). The batch is moved to
   the device inside the timed step, as ``Trainer.run_step`` does. Warm-up iterations are excluded.
2. SGDet inference time per image (ms) with ``--test-batch`` images per forward (``torch.no_grad``,
   ``model.eval()``, CPU uint8 images as a test loader hands them over), followed by WHERE THE
   TIME GOES: an instrumented pass that times every stage (detector: preprocess, backbone, RPN,
   box head + detection NMS; relation features: pairs, object ROI, union box; context: Motifs
   LSTMs, object decoder, class-aware NMS, relation classifier; relation post-processing) with
   forward hooks / wrapped calls and ``torch.cuda.synchronize`` around each stage on GPU. The
   instrumented pass is separate from the plain timing because the extra synchronisations cost a
   little; its percentages are of its own total.

The detector has random weights (or ``MODEL.PRETRAINED_DETECTOR_CKPT``). A random box classifier
scores every class near 1/C, below SGB's score threshold 0.01, so SGDet would find no object at
all; unless a detector checkpoint is given the classifier weights are therefore rescaled once
(``--logit-std``) so that a few classes per proposal pass the threshold and the detector keeps
``DETECTIONS_PER_IMG`` boxes as a trained one does. The printed objects/pairs per image tell the
workload actually measured.

Presets (``--preset``; config overrides come after ``--config-file`` and before trailing ``KEY VALUE``
pairs):

* ``reference``: SGB's X-101-32x8d-FPN (``R-101-FPN``, 32 groups x 8, ``STRIDE_IN_1X1 False``), 4096
  MLP head, 151 classes, 51 predicates, 600x1000 images, SGB relation dims (hidden 512, pooling
  4096, embedding 200, 1024 pairs per training image). Targets on one H100: PredCls training
  >= 60 images/s, SGDet inference <= 30 ms/image with batched test images.
* ``cpu-small`` (default without CUDA): R-18-FPN with 64 channels and GroupNorm (as
  ``configs/synthvg/base_two_stage.yaml``), small heads, 192x256 images, few iterations.
* ``none``: only ``--config-file`` and the trailing overrides.

    python benchmarks/bench_two_stage.py --preset reference --batch 8 --test-batch 8
    python benchmarks/bench_two_stage.py --preset cpu-small --iters 3
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import pathlib
import platform
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sgg.config import load_config  # noqa: E402
from sgg.modeling.meta_arch import build_sgg_model  # noqa: E402
from sgg.solver import build_optimizer  # noqa: E402
from sgg.structures import Boxes, Instances  # noqa: E402

PRESETS: Dict[str, dict] = {
    "reference": dict(
        opts=[
            "MODEL.BACKBONE.CONV_BODY", "R-101-FPN",
            "MODEL.RESNETS.NUM_GROUPS", "32",
            "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
            "MODEL.RESNETS.STRIDE_IN_1X1", "False",
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "4096",
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "151",
            "MODEL.ROI_RELATION_HEAD.NUM_CLASSES", "51",
            "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor",
            "MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM", "512",
            "MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM", "4096",
            "MODEL.ROI_RELATION_HEAD.EMBED_DIM", "200",
            "MODEL.ROI_RELATION_HEAD.BATCH_SIZE_PER_IMAGE", "1024",
            "MODEL.ROI_RELATION_HEAD.POSITIVE_FRACTION", "0.25",
        ],
        image_size=(600, 1000), classes=151, predicates=51,
        batch=8, test_batch=8, iters=20, warmup=5, test_iters=10, test_warmup=3, profile_iters=10),
    "cpu-small": dict(
        opts=[
            "MODEL.BACKBONE.CONV_BODY", "R-18-FPN",
            "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "0",
            "MODEL.DETECTOR.BACKBONE_NORM", "GN",
            "MODEL.FPN.USE_GN", "True",
            "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64",
            "MODEL.RPN.PRE_NMS_TOP_N_TEST", "1000",
            "MODEL.RPN.POST_NMS_TOP_N_TEST", "300",
            "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "300",
            "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "30",
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "256",
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "151",
            "MODEL.ROI_RELATION_HEAD.NUM_CLASSES", "51",
            "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor",
            "MODEL.ROI_RELATION_HEAD.BATCH_SIZE_PER_IMAGE", "128",
            "MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM", "128",
            "MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM", "256",
            "MODEL.ROI_RELATION_HEAD.EMBED_DIM", "64",
        ],
        image_size=(192, 256), classes=151, predicates=51,
        batch=2, test_batch=8, iters=3, warmup=1, test_iters=2, test_warmup=1, profile_iters=1),
    "none": dict(opts=[], image_size=(600, 1000), classes=151, predicates=51,
                 batch=8, test_batch=8, iters=20, warmup=5, test_iters=10, test_warmup=3, profile_iters=10),
}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# Synthetic inputs
# ----------------------------------------------------------------------------------------------
def make_inputs(gen: torch.Generator, n: int, size, num_boxes: int, num_rels: int, num_classes: int,
                num_predicates: int, pin: bool, start_id: int = 0) -> List[dict]:
    """``n`` mapper-format dicts (resized frame = original size): random uint8 RGB image, random
    boxes (at least 8 px), classes 1..C-1, ``num_rels`` distinct ordered pairs with predicates 1..P-1."""
    h, w = size
    out = []
    for k in range(n):
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
        if pin:
            image = image.pin_memory()
        x1 = torch.rand(num_boxes, generator=gen) * (w - 8)
        y1 = torch.rand(num_boxes, generator=gen) * (h - 8)
        bw = 8 + torch.rand(num_boxes, generator=gen) * (w / 2)
        bh = 8 + torch.rand(num_boxes, generator=gen) * (h / 2)
        boxes = torch.stack([x1, y1, (x1 + bw).clamp(max=w - 1), (y1 + bh).clamp(max=h - 1)], dim=1)
        classes = torch.randint(1, num_classes, (num_boxes,), generator=gen, dtype=torch.int64)
        m = min(num_rels, num_boxes * (num_boxes - 1))
        codes = torch.randperm(num_boxes * (num_boxes - 1), generator=gen)[:m]
        subj = codes // (num_boxes - 1)
        obj = codes % (num_boxes - 1)
        obj = obj + (obj >= subj).long()
        preds = torch.randint(1, num_predicates, (m,), generator=gen, dtype=torch.int64)
        out.append({
            "image": image, "image_id": start_id + k, "file_name": "", "height": h, "width": w,
            "instances": Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=classes),
            "relations": torch.stack([subj, obj, preds], dim=1),
        })
    return out


def to_device(batch: Sequence[dict], device: torch.device) -> List[dict]:
    out = []
    for d in batch:
        d = dict(d)
        d["image"] = d["image"].to(device, non_blocking=True)
        d["instances"] = d["instances"].to(device)
        d["relations"] = d["relations"].to(device, non_blocking=True)
        out.append(d)
    return out


# ----------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------
def make_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class StageTimer:
    """Accumulates wall time per stage name; stages are module forwards (hooks) or wrapped calls.

    Each stage start/end synchronises the device, so a stage's time is the time its kernels take.
    Only counts while ``enabled``. ``restore()`` removes every hook and wrapper.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.enabled = False
        self.times: Dict[str, float] = defaultdict(float)
        self.calls: Dict[str, int] = defaultdict(int)
        self._open: Dict[str, List[float]] = defaultdict(list)
        self._undo: List[Callable[[], None]] = []

    def begin(self, name: str) -> None:
        if self.enabled:
            self.sync()
            self._open[name].append(time.perf_counter())

    def end(self, name: str) -> None:
        if self.enabled and self._open[name]:
            self.sync()
            self.times[name] += time.perf_counter() - self._open[name].pop()
            self.calls[name] += 1

    def hook_module(self, module: Optional[torch.nn.Module], name: str) -> None:
        if module is None:
            return
        h1 = module.register_forward_pre_hook(lambda m, args: self.begin(name))
        h2 = module.register_forward_hook(lambda m, args, out: self.end(name))
        self._undo += [h1.remove, h2.remove]

    def wrap(self, owner, attr: str, name: str, instance: bool = True) -> None:
        """Replace ``owner.attr`` by a timed wrapper (an instance attribute shadowing a method, or a
        module-level function when ``instance`` is False)."""
        orig = getattr(owner, attr)

        def timed(*args, **kwargs):
            self.begin(name)
            try:
                return orig(*args, **kwargs)
            finally:
                self.end(name)

        setattr(owner, attr, timed)
        if instance:
            self._undo.append(lambda: delattr(owner, attr))
        else:
            self._undo.append(lambda: setattr(owner, attr, orig))

    def reset(self) -> None:
        self.times.clear()
        self.calls.clear()

    def restore(self) -> None:
        for fn in reversed(self._undo):
            fn()
        self._undo.clear()


def instrument_sgdet(model, timer: StageTimer) -> None:
    import sgg.modeling.relation.head as head_mod

    det = model.detector
    head = model.relation_head
    timer.wrap(det, "preprocess", "preprocess")
    timer.hook_module(det.backbone, "backbone")
    timer.hook_module(det.rpn, "rpn")
    timer.wrap(det.roi_heads, "inference", "box_head")
    timer.wrap(head.sampler, "test_pairs", "pairs")
    timer.hook_module(head.box_feature_extractor, "obj_feats")
    union = head.union_feature_extractor
    timer.hook_module(union, "union_feats")
    if hasattr(union, "_pool_all_levels"):
        timer.wrap(union, "_pool_all_levels", "union_pool")
    timer.hook_module(getattr(union, "reduce_channel", None), "union_reduce")
    timer.hook_module(getattr(union, "rect_conv", None), "union_rect")
    timer.hook_module(getattr(union, "head", None), "union_head")
    pred = head.predictor
    timer.hook_module(pred, "predictor")
    ctx = getattr(pred, "context_layer", None)
    timer.hook_module(ctx, "context")
    timer.hook_module(getattr(ctx, "decoder_rnn", None), "decoder")
    motifs_mod = sys.modules.get(type(pred).__module__)
    if motifs_mod is not None and hasattr(motifs_mod, "class_aware_nms_labels_batched"):
        timer.wrap(motifs_mod, "class_aware_nms_labels_batched", "ctx_nms", instance=False)
    timer.wrap(head_mod, "postprocess_relations", "rel_post", instance=False)


# (group, label, stage, stages to subtract)
BREAKDOWN = [
    ("detector", "input preprocess (normalise, pad, H2D)", "preprocess", ()),
    ("detector", "backbone (ResNet + FPN)", "backbone", ()),
    ("detector", "RPN (head, anchors, proposal NMS)", "rpn", ()),
    ("detector", "box head + detection NMS", "box_head", ()),
    ("relation features", "pair enumeration", "pairs", ()),
    ("relation features", "object ROI features (ROIAlign + fc6/fc7)", "obj_feats", ()),
    ("relation features", "union-box features: ROIAlign on all levels", "union_pool", ("union_reduce",)),
    ("relation features", "union-box features: level-reduce conv 3x3", "union_reduce", ()),
    ("relation features", "union-box features: rectangle-mask convs", "union_rect", ()),
    ("relation features", "union-box features: fc6/fc7", "union_head", ()),
    ("relation features", "union-box features: boxes, masks, glue", "union_feats",
     ("union_pool", "union_rect", "union_head")),
    ("context", "object/edge context LSTMs", "context", ("decoder", "ctx_nms")),
    ("context", "object decoder (greedy)", "decoder", ()),
    ("context", "class-aware NMS relabel", "ctx_nms", ()),
    ("context", "relation classifier (post_emb/cat, union, freq bias)", "predictor", ("context",)),
    ("post-processing", "relation post-processing (softmax, sort)", "rel_post", ()),
]


def print_breakdown(times: Dict[str, float], total: float, images: int) -> None:
    rows = []
    for group, label, key, minus in BREAKDOWN:
        if key not in times:
            continue
        t = times[key] - sum(times.get(m, 0.0) for m in minus)
        rows.append((group, label, t))
    other = total - sum(r[2] for r in rows)
    rows.append(("other", "glue (visible_inputs, resize to original size, ...)", other))
    print(f"  {'stage':<58} {'ms/image':>9} {'%':>6}")
    groups: Dict[str, float] = defaultdict(float)
    for group, _, t in rows:
        groups[group] += t
    last = None
    for group, label, t in rows:
        if group != last:
            g = groups[group]
            print(f"  {group.upper():<58} {1e3 * g / images:9.2f} {100 * g / total:6.1f}")
            last = group
        print(f"    {label:<56} {1e3 * t / images:9.2f} {100 * t / total:6.1f}")
    print(f"  {'TOTAL (instrumented)':<58} {1e3 * total / images:9.2f} {100.0:6.1f}")


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def build_cfg(args, mode: str):
    opts = list(PRESETS[args.preset]["opts"]) + list(args.opts)
    protocol = {"predcls": ("True", "True"), "sgdet": ("False", "False")}[mode]
    opts += ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", protocol[0],
             "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", protocol[1],
             "MODEL.DEVICE", str(args.device), "DTYPE", args.dtype, "GLOVE_DIR", ""]
    if args.predictor:
        opts += ["MODEL.ROI_RELATION_HEAD.PREDICTOR", args.predictor]
    return load_config(args.config_file, opts)


def build_model(cfg, args, device):
    model = build_sgg_model(cfg, statistics=None, num_obj_classes=args.classes,
                            num_rel_classes=args.predicates)
    return model.to(device)


@torch.no_grad()
def calibrate_detector(model, batch: Sequence[dict], target_std: float) -> float:
    """Rescale the box classifier so that its logits have a per-box std of ``target_std`` over the
    classes (a random classifier scores every class ~1/C, below the 0.01 score threshold)."""
    from torchvision.models.detection.image_list import ImageList

    det = model.detector
    det.eval()
    images, sizes = det.preprocess(batch)
    feats = det.backbone(images)
    props, _ = det.rpn(ImageList(images, sizes), feats, None, is_train=False)
    x = det.roi_heads.box_features(feats, props, sizes)
    cls = det.box_predictor.cls_score
    logits = cls(x).float()
    std = float(logits.std(dim=1).mean()) if logits.numel() else 0.0
    if std > 1e-6:
        cls.weight.mul_(target_std / std)
        cls.bias.mul_(target_std / std)
    else:  # features all zero: class preferences from the bias alone
        cls.bias.normal_(0.0, target_std)
    return std


# ----------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------
def autocast_ctx(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[dtype])


def bench_train(args, device, sync) -> None:
    cfg = build_cfg(args, "predcls")
    torch.manual_seed(args.seed)
    model = build_model(cfg, args, device)
    model.train()
    optimizer = build_optimizer(cfg, model)
    use_scaler = args.dtype == "float16" and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    clip = float(cfg.SOLVER.GRAD_NORM_CLIP)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(args.seed)
    pin = device.type == "cuda"
    pool = [make_inputs(gen, args.batch, args.image_size, args.boxes, args.rels, args.classes,
                        args.predicates, pin, start_id=i * args.batch) for i in range(2)]

    print(f"\n== PredCls training: {type(model.relation_head.predictor).__name__}, batch {args.batch}, "
          f"{args.image_size[0]}x{args.image_size[1]}, {args.boxes} boxes + {args.rels} relations per image, "
          f"dtype {args.dtype}{' + GradScaler' if use_scaler else ''}, grad clip {clip:g}")
    print(f"   parameters: {n_train / 1e6:.2f} M trainable of {n_total / 1e6:.2f} M")

    losses_seen = {}

    def step(batch):
        batch = to_device(batch, device)
        with autocast_ctx(device, args.dtype):
            out = model(batch)
        losses = {k: v for k, v in out.items() if k.startswith("loss")}
        total = torch.stack([v.float() for v in losses.values()]).sum()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()
        return losses

    for i in range(args.warmup):
        step(pool[i % 2])
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.iters):
        t0 = time.perf_counter()
        losses = step(pool[i % 2])
        sync()
        times.append(time.perf_counter() - t0)
    for k, v in losses.items():
        losses_seen[k] = float(v.detach().float())
    total = sum(times)
    ips = args.batch * args.iters / total if total > 0 else float("nan")
    med = statistics.median(times)
    print(f"   iterations: {args.warmup} warm-up + {args.iters} timed")
    print(f"   time/iter: mean {1e3 * total / args.iters:.1f} ms, median {1e3 * med:.1f} ms, "
          f"min {1e3 * min(times):.1f} ms")
    print(f"   THROUGHPUT: {ips:.2f} images/s (median iter: {args.batch / med:.2f} images/s)")
    print("   last losses: " + ", ".join(f"{k} {v:.4f}" for k, v in losses_seen.items()))
    if device.type == "cuda":
        print(f"   peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def bench_sgdet(args, device, sync) -> None:
    cfg = build_cfg(args, "sgdet")
    torch.manual_seed(args.seed)
    model = build_model(cfg, args, device)
    model.eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    pin = device.type == "cuda"
    pool = [make_inputs(gen, args.test_batch, args.image_size, args.boxes, args.rels, args.classes,
                        args.predicates, pin, start_id=i * args.test_batch) for i in range(2)]
    print(f"\n== SGDet inference: test batch {args.test_batch}, {args.image_size[0]}x{args.image_size[1]}, "
          f"dtype {args.dtype}, detections/image <= {cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG}, "
          f"RPN post-NMS top-n {cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST}")
    if cfg.MODEL.PRETRAINED_DETECTOR_CKPT or args.logit_std <= 0:
        print("   detector classifier: as loaded (no calibration)")
    else:
        std = calibrate_detector(model, pool[0], args.logit_std)
        print(f"   detector classifier: random; logits rescaled from per-box std {std:.4f} to "
              f"{args.logit_std:g} so that detections pass SCORE_THRESH {cfg.MODEL.ROI_HEADS.SCORE_THRESH:g}")

    def run(batch):
        with torch.no_grad(), autocast_ctx(device, args.dtype):
            return model(batch)

    for i in range(args.test_warmup):
        graphs = run(pool[i % 2])
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, objs, rels = [], [], []
    for i in range(args.test_iters):
        t0 = time.perf_counter()
        graphs = run(pool[i % 2])
        sync()
        times.append(time.perf_counter() - t0)
        objs += [len(g) for g in graphs]
        rels += [g.num_relations for g in graphs]
    n_img = args.test_batch * args.test_iters
    total = sum(times)
    print(f"   batches: {args.test_warmup} warm-up + {args.test_iters} timed "
          f"({n_img} images)")
    print(f"   objects/image: mean {statistics.mean(objs):.1f} (min {min(objs)}, max {max(objs)}); "
          f"relation pairs/image: mean {statistics.mean(rels):.0f}")
    print(f"   TIME: {1e3 * total / n_img:.2f} ms/image (median batch {1e3 * statistics.median(times):.1f} ms, "
          f"{n_img / total:.2f} images/s)")
    if device.type == "cuda":
        print(f"   peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")

    if args.profile_iters < 1:
        return
    timer = StageTimer(sync)
    instrument_sgdet(model, timer)
    try:
        timer.enabled = True
        t_all = 0.0
        for i in range(args.profile_iters):
            sync()
            t0 = time.perf_counter()
            run(pool[i % 2])
            sync()
            t_all += time.perf_counter() - t0
        timer.enabled = False
    finally:
        timer.restore()
    n_prof = args.test_batch * args.profile_iters
    print(f"\n   WHERE THE TIME GOES (instrumented pass, {n_prof} images, synchronised per stage):")
    print_breakdown(dict(timer.times), t_all, n_prof)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=None, help="optional YAML (applied before the preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="reference (X-101-32x8d-FPN, 600x1000) or cpu-small; default: reference on "
                             "CUDA, cpu-small otherwise")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="autocast dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed training iterations")
    parser.add_argument("--warmup", type=int, default=None, help="untimed training iterations first")
    parser.add_argument("--test-iters", type=int, default=None, help="timed SGDet batches")
    parser.add_argument("--test-warmup", type=int, default=None, help="untimed SGDet batches first")
    parser.add_argument("--profile-iters", type=int, default=None,
                        help="SGDet batches of the instrumented (per-stage) pass; 0 skips it")
    parser.add_argument("--batch", type=int, default=None, help="training images per iteration")
    parser.add_argument("--test-batch", type=int, default=None, help="SGDet images per forward (default 8)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    parser.add_argument("--boxes", type=int, default=20, help="GT boxes per training image")
    parser.add_argument("--rels", type=int, default=15, help="GT relations per training image")
    parser.add_argument("--classes", type=int, default=None, help="object classes incl. background")
    parser.add_argument("--predicates", type=int, default=None, help="predicates incl. background")
    parser.add_argument("--logit-std", type=float, default=3.0,
                        help="random detector: classifier logit std after calibration (<= 0: none)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sgdet", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictor", default=None,
                        help="relation predictor (MODEL.ROI_RELATION_HEAD.PREDICTOR; default: the preset's, Motifs)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.preset is None:
        args.preset = "reference" if device.type == "cuda" else "cpu-small"
    preset = PRESETS[args.preset]
    for key in ("batch", "test_batch", "iters", "warmup", "test_iters", "test_warmup", "profile_iters",
                "classes", "predicates"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.image_size = tuple(args.image_size or preset["image_size"])
    if args.dtype is None:
        args.dtype = "bfloat16" if device.type == "cuda" else "float32"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    if args.iters < 1 or args.test_iters < 1:
        parser.error("--iters and --test-iters must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sync = make_sync(device)

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cap = torch.cuda.get_device_capability(device)
        dev_desc = f"{name} (sm_{cap[0]}{cap[1]}, CUDA {torch.version.cuda})"
    else:
        dev_desc = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {device} = {dev_desc}")
    print(f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"preset {args.preset}, config file {args.config_file or '-'}, extra opts {args.opts or '-'}")
    print(f"image {args.image_size[0]}x{args.image_size[1]}, classes {args.classes}, predicates {args.predicates}, "
          f"dtype {args.dtype}, batch {args.batch}, test batch {args.test_batch}, seed {args.seed}"
          + (f", cudnn.benchmark {torch.backends.cudnn.benchmark}" if device.type == "cuda" else ""))
    cfg = build_cfg(args, "sgdet")
    m = cfg.MODEL
    rh = m.ROI_RELATION_HEAD
    print(f"model: {m.BACKBONE.CONV_BODY} (groups {m.RESNETS.NUM_GROUPS} x width {m.RESNETS.WIDTH_PER_GROUP}, "
          f"stride_in_1x1 {m.RESNETS.STRIDE_IN_1X1}, FPN {m.RESNETS.BACKBONE_OUT_CHANNELS} ch, "
          f"norm {m.DETECTOR.BACKBONE_NORM}), box head {m.ROI_BOX_HEAD.MLP_HEAD_DIM}, {rh.PREDICTOR} "
          f"hidden {rh.CONTEXT_HIDDEN_DIM} pooling {rh.CONTEXT_POOLING_DIM} embed {rh.EMBED_DIM}, "
          f"{rh.BATCH_SIZE_PER_IMAGE} train pairs/image")
    if args.preset == "reference":
        print("targets (one H100): PredCls training >= 60 images/s; SGDet inference <= 30 ms/image")

    if not args.skip_train:
        bench_train(args, device, sync)
        gc.collect()  # free the PredCls model before the SGDet one is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_sgdet:
        bench_sgdet(args, device, sync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
