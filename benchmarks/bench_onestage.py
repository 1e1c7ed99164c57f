"""Benchmark: one-stage (CoRF-style) model, inference images/s including decoding, and training images/s.

Random 512x512 uint8 images in the mapper format (no dataset needed). The model is built the way
the training scripts build it (``configs/onestage/*.yaml`` -> ``build_sgg_model``), SGDet protocol.

* Inference: ``model.eval()``, ``torch.no_grad()``, autocast; per call: the uint8 images (already
  on the device, as a prefetching loader delivers them) -> normalise + pad -> network -> decoder ->
  ``SceneGraph``s resized to the original size. Timed for each ``--batch-sizes`` entry; the
  network and the decoder are also timed separately (synchronised).
* Training: the trainer's step (autocast forward incl. target encoding, losses, backward,
  grad clip, AdamW step).

A random network's relation heatmaps sit at their prior (sigmoid 0.1 everywhere), so every cell
of every predicate would be a relation candidate: a far heavier decoding workload than a trained
model gives. ``--rel-prior`` (default 0.02) re-initialises the relation confidence bias so that
about that fraction of (predicate, cell) entries pass ``REL_THRESHOLD``; the candidates per image
are printed next to the timings.

``--cuda-graphs`` replays the field network as a CUDA graph (``MODEL.ONESTAGE.CUDA_GRAPHS``; the
decoder stays eager); ``--compile MODE`` wraps it in ``torch.compile`` (inference timings only;
"reduce-overhead" also uses CUDA graphs). Both are aimed at batch 1, where the network is
launch-bound.

    python benchmarks/bench_onestage.py --config-file configs/onestage/rn50.yaml
    python benchmarks/bench_onestage.py --config-file configs/onestage/synthvg_small.yaml --device cpu \
        --image-size 256 --batch-sizes 1 4 --iters 3 --train-batch 4
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import List

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sgg.config import load_config  # noqa: E402
from sgg.modeling.meta_arch import build_sgg_model  # noqa: E402
from sgg.structures import Boxes, Instances  # noqa: E402


def make_batch(n: int, size: int, device, num_classes: int, num_predicates: int, gen: torch.Generator,
               with_gt: bool = False) -> List[dict]:
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8).to(device),
             "height": size, "width": size, "image_id": 0}
        if with_gt:
            k = 12
            xy = torch.rand(k, 2, generator=gen) * size * 0.7
            wh = 16 + torch.rand(k, 2, generator=gen) * size * 0.3
            boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)
            d["instances"] = Instances((size, size), gt_boxes=Boxes(boxes.to(device)),
                                       gt_classes=torch.randint(1, num_classes + 1, (k,), generator=gen).to(device))
            s = torch.randperm(k, generator=gen)[:10]
            o = (s + 1) % k
            p = torch.randint(1, num_predicates + 1, (10,), generator=gen)
            d["relations"] = torch.stack([s, o, p], 1).to(device)
        out.append(d)
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, iters: int, warmup: int, device) -> List[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", default="configs/onestage/rn50.yaml")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32|bfloat16|float16 (default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--train-batch", type=int, default=16, help="0 skips the training measurement")
    ap.add_argument("--train-iters", type=int, default=20)
    ap.add_argument("--classes", type=int, default=150)
    ap.add_argument("--predicates", type=int, default=50)
    ap.add_argument("--rel-prior", type=float, default=0.02)
    ap.add_argument("--cudnn-benchmark", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--cuda-graphs", action="store_true", help="MODEL.ONESTAGE.CUDA_GRAPHS True (inference)")
    ap.add_argument("--compile", default="", metavar="MODE",
                    help="torch.compile the field network for inference: default | reduce-overhead | max-autotune")
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    cfg = load_config(args.config_file, ["MODEL.DEVICE", str(device), "DTYPE", dtype,
                                         "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False",
                                         "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "False",
                                         "MODEL.ONESTAGE.CUDA_GRAPHS", str(args.cuda_graphs), *args.opts])
    torch.manual_seed(0)
    model = build_sgg_model(cfg, None, args.classes + 1, args.predicates + 1).to(device)
    if args.channels_last:
        model.net.to(memory_format=torch.channels_last)
    o = cfg.MODEL.ONESTAGE
    bias = -math.log((1 - args.rel_prior) / args.rel_prior)
    with torch.no_grad():  # the relation confidence conv's bias holds the prior
        model.net.rel_head.logits.bias.fill_(bias)
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp else (lambda: torch.autocast(device.type, enabled=False))
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    train_net = model.net
    if args.compile:
        model.net = torch.compile(model.net, mode=args.compile)
        if model.graph_runner is not None:
            model.graph_runner.fn = model.net
    run_net = model.net if model.graph_runner is None else model.graph_runner
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, dtype {dtype}")
    print(f"model: backbone {o.BACKBONE}, trunks obj={o.OBJ_TRUNK} rel={o.REL_TRUNK}, width {o.HEAD_WIDTH}, "
          f"{args.classes} classes, {args.predicates} predicates, {n_params:.1f} M parameters, "
          f"input {args.image_size}x{args.image_size}, rel prior {args.rel_prior}, "
          f"CUDA graphs {args.cuda_graphs}, compile {args.compile or 'off'}")
    gen = torch.Generator().manual_seed(0)
    model.eval()
    print("\n== inference (SGDet, incl. normalise/pad, decoding, resize)")
    print(f"  {'batch':>5} {'images/s':>10} {'ms/batch':>10} {'net ms':>8} {'decode ms':>10} {'objects':>8} "
          f"{'rel cand.':>10} {'pairs':>7}")
    for bs in args.batch_sizes:
        batch = make_batch(bs, args.image_size, device, args.classes, args.predicates, gen)

        def infer():
            with torch.no_grad(), ctx():
                return model(batch)

        times = timeit(infer, args.iters, args.warmup, device)
        med = statistics.median(times)
        with torch.no_grad(), ctx():
            images, sizes = model.preprocess([d["image"] for d in batch])
            net_t = timeit(lambda: run_net(images), max(3, args.iters // 3), 2, device)
            fields = run_net(images)
            dec_t = timeit(lambda: model.inference(batch, fields=fields), max(3, args.iters // 3), 1, device)
            graphs = model(batch)
            cand = int((fields["rel_logits"].float().sigmoid() > o.REL_THRESHOLD).sum()) / bs
        objs = sum(len(g) for g in graphs) / bs
        pairs = sum(g.num_relations for g in graphs) / bs
        print(f"  {bs:>5} {bs / med:>10.1f} {1e3 * med:>10.2f} {1e3 * statistics.median(net_t):>8.2f} "
              f"{1e3 * statistics.median(dec_t):>10.2f} {objs:>8.1f} {cand:>10.0f} {pairs:>7.0f}")
    if args.train_batch > 0:
        from sgg.solver import build_optimizer

        model.net = train_net  # training is always eager
        model.train()
        opt = build_optimizer(cfg, model)
        scaler = torch.amp.GradScaler(device.type, enabled=(dtype == "float16"))
        batch = make_batch(args.train_batch, args.image_size, device, args.classes, args.predicates, gen,
                           with_gt=True)
        last = {}

        def step():
            with ctx():
                losses = model(batch)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.GRAD_NORM_CLIP)
            scaler.step(opt)
            scaler.update()
            last.update({k: float(v.detach()) for k, v in losses.items()})

        times = timeit(step, args.train_iters, 3, device)
        med = statistics.median(times)
        print(f"\n== training, batch {args.train_batch}: {args.train_batch / med:.1f} images/s "
              f"(median step {1e3 * med:.1f} ms)")
        print("   last losses: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))
    if device.type == "cuda":
        print(f"   peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
