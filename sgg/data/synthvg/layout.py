"""SynthVG layout sampling: which objects an image holds, where, and at what depth.

A scene is a ground or room region, free "root" objects and structured children: parts inside
their whole (a shirt on a person), items held at the side of a person, objects resting on a
support, contents inside a container, fixtures hanging below a support. Every object is a flat
fronto-parallel sprite at its own depth (metres); object depths are drawn independently of their
image position, so only occlusion / depth tells ``behind`` from ``in front of``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .world import SynthVGConfig, class_info

__all__ = ["Layout", "sample_layout"]

# Size priors: (height range as a fraction of image height, aspect w/h range).
_KIND_SIZE = {
    "person": ((0.30, 0.55), (0.35, 0.55)), "animal": ((0.18, 0.35), (1.1, 1.8)),
    "flyer": ((0.08, 0.16), (1.2, 2.2)), "vehicle": ((0.15, 0.30), (1.4, 2.4)),
    "board": ((0.04, 0.07), (2.5, 4.5)), "furniture": ((0.15, 0.30), (1.0, 2.0)),
    "structure": ((0.35, 0.75), (0.5, 1.2)), "plant": ((0.25, 0.55), (0.5, 0.9)),
    "container": ((0.10, 0.20), (0.8, 1.5)), "item": ((0.07, 0.14), (0.6, 1.5)),
    "fixture": ((0.08, 0.16), (0.6, 1.4)),
}
_CLASS_SIZE = {
    "pole": ((0.40, 0.80), (0.06, 0.14)), "post": ((0.30, 0.60), (0.08, 0.16)),
    "tower": ((0.50, 0.80), (0.25, 0.45)), "fence": ((0.10, 0.20), (3.0, 6.0)),
    "railing": ((0.08, 0.16), (3.0, 6.0)), "wire": ((0.02, 0.04), (8.0, 14.0)),
    "tree": ((0.40, 0.70), (0.6, 0.9)), "flower": ((0.08, 0.15), (0.6, 1.0)),
    "train": ((0.18, 0.30), (2.5, 4.0)), "bus": ((0.18, 0.30), (1.8, 2.6)),
    "bike": ((0.15, 0.25), (1.3, 1.8)), "motorcycle": ((0.15, 0.25), (1.3, 1.8)),
    "plate": ((0.04, 0.07), (1.8, 2.6)), "table": ((0.15, 0.25), (1.5, 2.5)),
    "bed": ((0.15, 0.25), (1.6, 2.4)), "curtain": ((0.25, 0.45), (0.4, 0.8)),
    "rock": ((0.10, 0.20), (1.0, 1.8)), "umbrella": ((0.10, 0.18), (1.2, 1.8)),
}
_PART_SLOT = {  # w range, h range (fractions of the whole), vertical placement
    "top": ((0.30, 0.50), (0.15, 0.25)), "upper": ((0.45, 0.70), (0.20, 0.30)),
    "lower": ((0.40, 0.60), (0.20, 0.30)), "foot": ((0.20, 0.35), (0.07, 0.12)),
    "side": ((0.15, 0.25), (0.10, 0.18)), "bottom": ((0.18, 0.28), (0.25, 0.40)),
    "any": ((0.15, 0.35), (0.15, 0.35)),
}
_SLOT_CAPACITY = {"top": 1, "upper": 1, "lower": 1, "foot": 2, "side": 2, "bottom": 2, "any": 2}
_MAX_PARTS = {"person": 3, "animal": 2, "vehicle": 2, "structure": 2, "fixture": 1, "plant": 1,
              "flyer": 1, "furniture": 1, "container": 1, "board": 1}


def _pick(rng, pool) -> int:
    ids, cum = pool  # class ids, normalised cumulative Zipf weights
    return int(ids[min(int(np.searchsorted(cum, rng.random(), side="right")), len(ids) - 1)])


def _size(rng, name: str, kind: str, W: int, H: int) -> Tuple[float, float]:
    (h0, h1), (a0, a1) = _CLASS_SIZE.get(name, _KIND_SIZE.get(kind, _KIND_SIZE["item"]))
    h = rng.uniform(h0, h1) * H
    w = min(h * rng.uniform(a0, a1), 0.95 * W)
    return w, h


class Layout:
    """The objects of one image as they are placed: ``boxes`` [x1, y1, x2, y2] integer pixels
    (x2, y2 exclusive), ``labels`` and ``z`` (depth in metres), at most ``budget`` of them."""

    def __init__(self, cfg: SynthVGConfig, T, rng, W: int, H: int, budget: int):
        self.cfg, self.T, self.rng, self.W, self.H, self.budget = cfg, T, rng, W, H, budget
        self.boxes: List[List[int]] = []
        self.labels: List[int] = []
        self.z: List[float] = []

    def full(self) -> bool:
        return len(self.labels) >= self.budget

    def add(self, c: int, box, z: float) -> Optional[int]:
        x1, y1, x2, y2 = box
        b = [int(round(max(0.0, x1))), int(round(max(0.0, y1))),
             int(round(min(float(self.W), x2))), int(round(min(float(self.H), y2)))]
        if b[2] - b[0] < self.cfg.min_box or b[3] - b[1] < self.cfg.min_box or self.full():
            return None
        self.boxes.append(b)
        self.labels.append(int(c))
        self.z.append(float(z))
        return len(self.labels) - 1

    # -- children ------------------------------------------------------------------------------
    def parts(self, i: int):
        T, rng = self.T, self.rng
        c = self.labels[i]
        pool = T.parts_of[c]
        if pool is None or rng.random() >= self.cfg.p_part:
            return
        x1, y1, x2, y2 = self.boxes[i]
        pw, ph = x2 - x1, y2 - y1
        n = 1 + rng.binomial(max(_MAX_PARTS.get(T.kind[c], 1) - 1, 0), 0.5)
        used: Dict[str, int] = {}
        left = rng.random() < 0.5
        for k in range(n):
            p = _pick(rng, pool)
            slot = class_info(T.names[p])[3]
            (w0, w1), (h0, h1) = _PART_SLOT[slot]
            w, h = rng.uniform(w0, w1) * pw, rng.uniform(h0, h1) * ph
            taken = used.get(slot, 0)
            if taken >= _SLOT_CAPACITY[slot]:
                continue  # parts do not pile up on each other
            used[slot] = taken + 1
            side_left = left != bool(taken)  # a second foot / hand / wheel goes to the other side
            if slot == "top":
                py = rng.uniform(0.0, 0.08) * ph
                px = (pw - w) / 2 + rng.uniform(-0.1, 0.1) * pw
            elif slot in ("upper", "lower"):
                py = rng.uniform(*((0.22, 0.35) if slot == "upper" else (0.55, 0.65))) * ph
                px = (pw - w) / 2 + rng.uniform(-0.05, 0.05) * pw
            elif slot in ("foot", "bottom"):
                py = ph - h - rng.uniform(0.0, 0.03) * ph
                px = rng.uniform(0.02, 0.12) * pw if side_left else pw - w - rng.uniform(0.02, 0.12) * pw
            elif slot == "side":
                py = rng.uniform(0.35, 0.55) * ph
                px = rng.uniform(0.0, 0.08) * pw if side_left else pw - w - rng.uniform(0.0, 0.08) * pw
            else:  # "any": two such parts take the left and right halves
                px = rng.uniform(0, pw / 2 - w) if side_left else rng.uniform(pw / 2, pw - w)
                py = rng.uniform(0, ph - h)
            px, py = min(max(px, 0.0), pw - w), min(max(py, 0.0), ph - h)
            self.add(p, (x1 + px, y1 + py, x1 + px + w, y1 + py + h), self.z[i] - 0.05 - 0.01 * k)

    def hold(self, i: int):
        T, rng = self.T, self.rng
        pool = T.hold_items[self.labels[i]]
        if pool is None or rng.random() >= self.cfg.p_hold:
            return
        x1, y1, x2, y2 = self.boxes[i]
        pw, ph = x2 - x1, y2 - y1
        c = _pick(rng, pool)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        s = min(1.0, 0.35 * ph / h, 0.5 * pw / w)
        w, h = w * s, h * s
        f = rng.uniform(0.3, 0.7)
        bx1 = x2 - f * w if rng.random() < 0.5 else x1 - (1 - f) * w
        cy = y1 + rng.uniform(0.35, 0.7) * ph
        self.add(c, (bx1, cy - h / 2, bx1 + w, cy + h / 2), self.z[i] - 0.05)

    def rest_on(self, i: int) -> Optional[int]:
        T, rng = self.T, self.rng
        pool = T.on_children[self.labels[i]]
        if pool is None or rng.random() >= self.cfg.p_on:
            return None
        x1, y1, x2, y2 = self.boxes[i]
        sw, sh = x2 - x1, y2 - y1
        c = _pick(rng, pool)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        s = min(1.0, 1.3 * sw / w)
        w, h = w * s, h * s
        bottom = y1 + min(rng.uniform(0.1, 1.0) * 0.2 * sh, 0.5 * h)
        cx = x1 + rng.uniform(0.15, 0.85) * sw
        return self.add(c, (cx - w / 2, bottom - h, cx + w / 2, bottom), self.z[i] - 0.05)

    def contain(self, i: int) -> Optional[int]:
        T, rng = self.T, self.rng
        pool = T.in_children[self.labels[i]]
        if pool is None or rng.random() >= self.cfg.p_in:
            return None
        x1, y1, x2, y2 = self.boxes[i]
        cw, ch = x2 - x1, y2 - y1
        c = _pick(rng, pool)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        s = min(rng.uniform(0.3, 0.6) * ch / h, 0.55 * cw / w)
        w, h = w * s, h * s
        bx, by = x1 + rng.uniform(0, cw - w), y1 + rng.uniform(0, ch - h)
        return self.add(c, (bx, by, bx + w, by + h), self.z[i] - 0.05)

    def hang(self, i: int):
        T, rng = self.T, self.rng
        if T.hangers is None or not T.can_hold_up[self.labels[i]] or rng.random() >= self.cfg.p_hang:
            return
        x1, y1, x2, y2 = self.boxes[i]
        c = _pick(rng, T.hangers)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        w = min(w, x2 - x1)
        if y2 + 0.5 * h > self.H:
            return
        cx = x1 + rng.uniform(0.2, 0.8) * (x2 - x1)
        top = y2 - rng.uniform(0.0, 0.03) * h
        self.add(c, (cx - w / 2, top, cx + w / 2, top + h), self.z[i] - 0.05)

    def children(self, i: int, level: int = 0):
        self.parts(i)
        self.hold(i)
        if level == 0:
            for j in (self.rest_on(i), self.contain(i)):
                if j is not None:
                    self.children(j, level + 1)
            self.hang(i)


def sample_layout(cfg: SynthVGConfig, T, rng, W: int, H: int) -> Layout:
    """A scene of a W x H image: an optional ground or room region, free root objects (placed to
    keep objects from hiding each other) and their children (parts, held items, objects resting
    on or inside them, fixtures hanging below). ``T``: the config's tables (:func:`~.world.tables`)."""
    lo, hi = cfg.objects_per_image
    L = Layout(cfg, T, rng, W, H, int(rng.integers(lo, hi + 1)))
    zmin, zmax = cfg.object_depth
    zfar = min(cfg.background_depth)
    region, region_kind = None, None
    u = rng.random()
    if T.grounds is not None and u < cfg.p_ground:
        c = _pick(rng, T.grounds)
        gh = rng.uniform(0.2, 0.4) * H
        gx1 = rng.uniform(0, 0.3) * W if rng.random() < 0.5 else 0.0
        gx2 = W - (rng.uniform(0, 0.3) * W if rng.random() < 0.5 else 0.0)
        region = L.add(c, (gx1, H - gh, gx2, H), rng.uniform(zmax + 0.3, zfar - 1.2))
        region_kind = "ground"
    elif T.areas is not None and rng.random() < cfg.p_area:
        c = _pick(rng, T.areas)
        aw, ah = rng.uniform(0.65, 1.0) * W, rng.uniform(0.65, 1.0) * H
        ax, ay = rng.uniform(0, W - aw), rng.uniform(0, H - ah)
        region = L.add(c, (ax, ay, ax + aw, ay + ah), rng.uniform(zfar - 1.0, zfar - 0.5))
        region_kind = "area"
    attempts = 0
    while not L.full() and attempts < 4 * L.budget:
        attempts += 1
        c = _pick(rng, T.roots)
        kind = T.kind[c]
        w, h = _size(rng, T.names[c], kind, W, H)
        mode = "free"
        if region_kind == "ground" and T.standable[c] and rng.random() < 0.75:
            mode = "ground"
        elif kind == "flyer":
            mode = "sky"
        elif region_kind == "area" and rng.random() < 0.8:
            mode = "area"
            ax1, ay1, ax2, ay2 = L.boxes[region]
            w, h = min(w, 0.9 * (ax2 - ax1)), min(h, 0.9 * (ay2 - ay1))
        # A few tries to keep objects from hiding each other (VG annotates visible things).
        others = np.array([b for j, b in enumerate(L.boxes) if j != region], np.float64).reshape(-1, 4)
        best, best_cover = None, 2.0
        for _ in range(6):
            if mode == "ground":
                gx1, gy1, gx2, gy2 = L.boxes[region]
                gw, gh = gx2 - gx1, gy2 - gy1
                bottom = rng.uniform(gy1 + 0.1 * gh, gy2)
                cx = rng.uniform(gx1 + 0.1 * gw, gx2 - 0.1 * gw)
            elif mode == "sky":
                bottom = rng.uniform(0.15, 0.55) * H
                cx = rng.uniform(0, W)
            elif mode == "area":
                ax1, ay1, ax2, ay2 = L.boxes[region]
                bottom = rng.uniform(ay1 + h, ay2)
                cx = rng.uniform(ax1 + w / 2, ax2 - w / 2)
            else:
                bottom = rng.uniform(0.35, 1.0) * H
                cx = rng.uniform(0, W)
            box = np.array([max(cx - w / 2, 0), max(bottom - h, 0), min(cx + w / 2, W), min(bottom, H)])
            cover = _max_cover(box, others)
            if cover < best_cover:
                best, best_cover = box, cover
            if cover <= 0.4:
                break
        i = L.add(c, best, rng.uniform(zmin, zmax))
        if i is not None:
            L.children(i)
    return L


def _max_cover(box: np.ndarray, others: np.ndarray) -> float:
    """Largest share of either box that one box of ``others`` and ``box`` have in common."""
    if len(others) == 0:
        return 0.0
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = iw * ih
    a = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
    ao = np.maximum((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-6)
    return float(np.max(np.maximum(inter / a, inter / ao)))
