"""Writing a SynthVG dataset: the worker pool, the zero-shot choice and the files.

``generate_synthvg(out_dir, profile)`` writes::

    OUT/VG-SGG-with-attri.h5           h5 in the SGB layout (specs/data.md)
    OUT/VG-SGG-dicts-with-attri.json   label/predicate/attribute maps (1-based), counts, depth_scale
    OUT/image_data.json                one {image_id, width, height, url, coco_id, flickr_id} per h5 row
    OUT/VG_100K/{image_id}.jpg         RGB images (JPEG, quality ``jpeg_quality``)
    OUT/depth/{image_id}.png           true depth, 16-bit PNG in MILLIMETRES
                                       (metres = value / depth_scale, depth_scale = 1000)
    OUT/zeroshot_triplet.pytorch       torch.save(LongTensor[Z, 3]) of (subject class, object class,
                                       predicate), 1-based: the test triplets never annotated in train
    OUT/predicate_hierarchy.json       coarse -> fine predicates and fine -> coarse parent (:mod:`.rules`)
    OUT/synthvg_config.json            the resolved ``SynthVGConfig`` (``rule_predictions`` reads it)
    OUT/README.md                      a short description of the above

The three annotation files are written by :func:`sgg.data.datasets.vg150_files.write_vg150`: boxes
as int32 [cx, cy, w, h] on the 1024 / 512 grids, encoded so that the reference decode returns the
drawn pixel box (x2, y2 exclusive) up to 0.5 / (1024 / max(W, H)) px; ``attributes``: the first
column is the object's colour attribute (1-based), the rest 0.

Image ids start at 1 and skip the ids SGB drops as corrupted VG images (1592, 1722, 4616, 4617).
Split: every image is test with probability ``test_fraction`` (0.3), so train and test are
interleaved in file order. ``num_zeroshot`` (subject, object, predicate) triplets that are rare in
train are withheld from the train annotation; ``zeroshot_triplet.pytorch`` lists every test
triplet absent from train.

Determinism: each image uses its own RNGs (:mod:`.scene`), so a run with any number of workers
writes the same files; the same seed gives byte-identical h5 / json files.
"""
from __future__ import annotations

import logging
import os
import time
from typing import List, Tuple, Union

import cv2
import numpy as np

from ..datasets.vg150_files import (CORRUPTED_IMAGE_IDS, DEPTH_DIR, IMAGE_DIR, SPLIT_TEST, SPLIT_TRAIN,
                                    ZEROSHOT_FILE, image_filename, write_json, write_vg150)
from .rules import predicate_hierarchy, rule_tables
from .scene import generate_image
from .world import COLOURS, CONFIG_FILE, SynthVGConfig, config_to_json, make_config

logger = logging.getLogger(__name__)

__all__ = ["CORRUPTED_VG_IDS", "HIERARCHY_FILE", "make_image_ids", "generate_synthvg"]

# SGB's VGDataset drops these ids (known-corrupt VG images); SynthVG never uses them.
CORRUPTED_VG_IDS: Tuple[int, ...] = tuple(sorted(CORRUPTED_IMAGE_IDS))
HIERARCHY_FILE = "predicate_hierarchy.json"


def make_image_ids(n: int) -> np.ndarray:
    """The first ``n`` image ids: 1, 2, ... skipping ``CORRUPTED_VG_IDS``."""
    bad = set(CORRUPTED_VG_IDS)
    ids = np.arange(1, n + len(bad) + 1, dtype=np.int64)
    return ids[~np.isin(ids, list(bad))][:n]


# ----------------------------------------------------------------------------------------------
# Worker pool
# ----------------------------------------------------------------------------------------------
def _work(args) -> dict:
    cfg, index, image_id, out_dir = args
    r = generate_image(cfg, index)
    img, depth = r.pop("image"), r.pop("depth")
    r.pop("coarse"), r.pop("fine")
    if not cv2.imwrite(os.path.join(out_dir, IMAGE_DIR, image_filename(image_id)), img,
                       [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise IOError(f"could not write image {image_filename(image_id)} under {out_dir}")
    if not cv2.imwrite(os.path.join(out_dir, DEPTH_DIR, f"{image_id}.png"), depth,
                       [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise IOError(f"could not write depth {image_id}.png under {out_dir}")
    r["image_id"] = image_id
    return r


def _init_worker():
    cv2.setNumThreads(1)


# ----------------------------------------------------------------------------------------------
# Zero-shot triplets
# ----------------------------------------------------------------------------------------------
def _triplet_rows(records: List[dict], split: int) -> np.ndarray:
    rows = [np.stack([r["labels"][r["relations"][:, 0]], r["labels"][r["relations"][:, 1]],
                      r["relations"][:, 2]], 1) for r in records if r["split"] == split and len(r["relations"])]
    return np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)


def _choose_zeroshot(cfg: SynthVGConfig, records: List[dict]) -> np.ndarray:
    """Triplets to withhold from train: present in test, rare in train (<= zeroshot_max_train and
    together <= 5% of the train relations), never a predicate's last train example."""
    tr, te = _triplet_rows(records, SPLIT_TRAIN), _triplet_rows(records, SPLIT_TEST)
    if cfg.num_zeroshot <= 0 or len(te) == 0 or len(tr) == 0:
        return np.zeros((0, 3), np.int64)
    tr_u, tr_n = np.unique(tr, axis=0, return_counts=True)
    count = {tuple(t): int(n) for t, n in zip(tr_u.tolist(), tr_n.tolist())}
    pred_left = np.bincount(tr[:, 2], minlength=cfg.num_predicates + 1)
    cand = [t for t in np.unique(te, axis=0).tolist() if 1 <= count.get(tuple(t), 0) <= cfg.zeroshot_max_train]
    rng = np.random.default_rng([cfg.seed, 1 << 30])
    budget = max(1, int(0.05 * len(tr)))
    chosen = []
    for k in rng.permutation(len(cand)).tolist():
        t = cand[k]
        n = count[tuple(t)]
        if n > budget or pred_left[t[2]] - n < 1:
            continue
        chosen.append(t)
        budget -= n
        pred_left[t[2]] -= n
        if len(chosen) == cfg.num_zeroshot:
            break
    return np.array(sorted(chosen), np.int64).reshape(-1, 3)


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
_README = """# SynthVG ({profile}, seed {seed})

Synthetic scene-graph dataset in the Scene-Graph-Benchmark VG150 file layout, written by
`tools/make_synthetic_vg.py` (library: `sgg.data.synthvg`).

- `VG-SGG-with-attri.h5`, `VG-SGG-dicts-with-attri.json`, `image_data.json`, `VG_100K/*.jpg`:
  the VG150 files (boxes_1024 / boxes_512 as [cx, cy, w, h]; split 0 = train, 2 = test).
- `depth/{{image_id}}.png`: 16-bit depth in millimetres (metres = value / {depth_scale:g}).
- `zeroshot_triplet.pytorch`: LongTensor [Z, 3] (subject, object, predicate), 1-based.
- `predicate_hierarchy.json`: coarse predicates, their fine refinements, and each predicate's parent.
- `synthvg_config.json`: the generator config (for `sgg.data.synthvg.rule_predictions`).

{num_images} images ({train} train / {test} test), {num_objects} objects, {num_relations} relations,
{num_classes} object classes, {num_predicates} predicates.
"""


def generate_synthvg(out_dir: str, profile: Union[str, SynthVGConfig] = "tiny", seed: int = 0,
                     workers: int = 1, progress: bool = False, format: str = "vg150", **overrides) -> dict:
    """Write a SynthVG dataset to ``out_dir``; returns a summary dict.

    profile: "tiny" | "small" | "vg150" (or a SynthVGConfig); overrides: any SynthVGConfig field
    (num_images, image_size, num_classes, num_predicates, ...). workers: processes for rendering
    (the output does not depend on it). format: "vg150" (the SGB files) or "coco_json" (written
    through the converter, :func:`sgg.data.datasets.coco_json.vg150_to_coco_json`, with no val
    file: val is cut from train at load time by DATASETS.NUM_VAL_IMAGES, as for VG150, so both
    formats give the same splits).
    """
    if format == "coco_json":
        import shutil
        import tempfile

        from ..datasets.coco_json import vg150_to_coco_json

        parent = os.path.dirname(os.path.abspath(str(out_dir)))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".synthvg_vg150_", dir=parent)  # same file system: images are linked
        try:
            summary = generate_synthvg(tmp, profile, seed, workers, progress, **overrides)
            vg150_to_coco_json(tmp, str(out_dir), num_val_im=0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        summary["out_dir"] = str(out_dir)
        summary["format"] = format
        return summary
    if format != "vg150":
        raise ValueError(f"format must be 'vg150' or 'coco_json', got {format!r}")
    t0 = time.perf_counter()
    cfg = make_config(profile, seed=seed, **overrides)
    T = rule_tables(cfg)
    out_dir = str(out_dir)
    for sub in ("", IMAGE_DIR, DEPTH_DIR):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    ids = make_image_ids(cfg.num_images)
    jobs = [(cfg, i, int(ids[i]), out_dir) for i in range(cfg.num_images)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc="SynthVG", unit="img")
    records: List[dict] = []
    if workers and workers > 1:
        import multiprocessing as mp
        # forkserver: a fork of this process may hang when it already ran torch / OpenMP threads
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap(_work, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers) or 1))):
                records.append(r)
                if bar is not None:
                    bar.update()
    else:
        for j in jobs:
            records.append(_work(j))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    t_render = time.perf_counter() - t0

    # zero-shot: withhold a few rare train triplets that occur in test
    withheld = _choose_zeroshot(cfg, records)
    dropped = 0
    if len(withheld):
        wset = set(map(tuple, withheld.tolist()))
        for r in records:
            if r["split"] != SPLIT_TRAIN or not len(r["relations"]):
                continue
            rel = r["relations"]
            trip = np.stack([r["labels"][rel[:, 0]], r["labels"][rel[:, 1]], rel[:, 2]], 1)
            keep = np.array([tuple(t) not in wset for t in trip.tolist()])
            dropped += int((~keep).sum())
            r["relations"] = rel[keep]
    colour_attr = np.array([0] + [T.look[c][1] + 1 for c in range(1, T.num_classes + 1)], np.int64)
    attributes = []
    for r in records:
        a = np.zeros((len(r["labels"]), 10), np.int64)
        a[:, 0] = colour_attr[r["labels"]]
        attributes.append(a)

    tr_set = set(map(tuple, _triplet_rows(records, SPLIT_TRAIN).tolist()))
    te_t = np.unique(_triplet_rows(records, SPLIT_TEST), axis=0)
    zs = np.array([t for t in te_t.tolist() if tuple(t) not in tr_set], np.int64).reshape(-1, 3)

    # files
    written = write_vg150(
        out_dir, image_ids=[r["image_id"] for r in records], widths=[r["width"] for r in records],
        heights=[r["height"] for r in records], splits=[r["split"] for r in records],
        boxes=[r["boxes"] for r in records], labels=[r["labels"] for r in records],
        relations=[r["relations"] for r in records], attributes=attributes,
        class_names=cfg.class_names, predicate_names=cfg.predicate_names,
        attribute_names=[c for c, _ in COLOURS],
        extra_info={"depth_scale": cfg.depth_scale, "depth_unit": "millimetre", "depth_dir": DEPTH_DIR,
                    "synthvg": {"profile": cfg.profile, "seed": cfg.seed}})
    hier = predicate_hierarchy(cfg)
    write_json(hier, os.path.join(out_dir, HIERARCHY_FILE))
    write_json(config_to_json(cfg), os.path.join(out_dir, CONFIG_FILE))
    import torch

    torch.save(torch.as_tensor(zs, dtype=torch.long), os.path.join(out_dir, ZEROSHOT_FILE))

    C, P = cfg.num_classes, cfg.num_predicates
    split = np.array([r["split"] for r in records])
    nobj = np.array([len(r["labels"]) for r in records])
    nrel = np.array([len(r["relations"]) for r in records])
    summary = {
        "out_dir": out_dir,
        "profile": cfg.profile,
        "seed": cfg.seed,
        "num_images": len(records),
        "num_classes": C,
        "num_predicates": P,
        "splits": {name: {"images": int((split == s).sum()), "objects": int(nobj[split == s].sum()),
                          "relations": int(nrel[split == s].sum()),
                          "images_without_relations": int(((split == s) & (nrel == 0)).sum())}
                   for name, s in (("train", SPLIT_TRAIN), ("test", SPLIT_TEST))},
        "predicate_count": dict(written["dicts"]["predicate_count"]),
        "object_count": dict(written["dicts"]["object_count"]),
        "coarse_predicates": hier["coarse"],
        "fine_predicates": hier["fine"],
        "num_zeroshot_triplets": int(len(zs)),
        "num_withheld_triplets": int(len(withheld)),
        "num_withheld_relations": dropped,
        "num_hidden_objects": int(sum(r["num_hidden"] for r in records)),
        "seconds": time.perf_counter() - t0,
        "seconds_render": t_render,
    }
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(_README.format(profile=cfg.profile, seed=cfg.seed, depth_scale=cfg.depth_scale,
                               num_images=len(records), train=summary["splits"]["train"]["images"],
                               test=summary["splits"]["test"]["images"], num_objects=int(nobj.sum()),
                               num_relations=int(nrel.sum()), num_classes=C, num_predicates=P))
    logger.info("SynthVG %s: %d images, %d objects, %d relations in %.1fs", cfg.profile,
                len(records), int(nobj.sum()), int(nrel.sum()), summary["seconds"])
    return summary
