"""Drawing a scene graph: the image with its boxes, the graph itself, and the ranked relations.

:func:`draw_scene_graph` renders one figure with matplotlib's Agg canvas directly (no pyplot, no
global backend change: safe in worker processes and without a display) and returns a uint8 RGB
array; :func:`draw_scene_graph_png` writes it as a PNG::

    +--------------------------------------------------------------------------------------+
    | photo.jpg  640x480 px, 12 objects, 20 relations (top 10 drawn)                       |
    +---------------------------+-------------------------------+--------------------------+
    | image, upscaled so its    | scene graph (networkx layout) |  ranked relations        |
    | longer side is >= 576 px  |   [0:man] --riding 0.81--> [3:horse]                     |
    | (at most 1024 px); boxes  |  nodes coloured as their      |  1. 0:man —riding→ 3:hor |
    | coloured per object,      |  boxes, arrows subject ->     |  2. ...                  |
    | labelled "id:name"        |  object with the predicate    |                          |
    +---------------------------+-------------------------------+--------------------------+
      image panel                 GRAPH_PANEL_WIDTH               LIST_PANEL_WIDTH

Only the ``top_k`` best relations are drawn (in the graph and in the list); the objects they use
get thick, labelled boxes, the other objects of the JSON thin unlabelled ones (when no relation is
drawn, the 20 best scored objects are labelled). Each object has a
fixed colour from its id (:func:`object_color`), the same on its box, its graph node and its
name chips in the list. The graph is built by :func:`scene_graph_to_networkx` (one edge per
(subject, object) pair, predicates of repeated pairs merged into one label; a pair related in both
directions gets two curved arrows) and laid out by ``networkx.spring_layout`` started from the
boxes' centres with a fixed seed, so the graph roughly keeps the image's arrangement and the same
input always gives the same picture (same pixels). :func:`scene_graph_canvas_size` tells the size.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "DEFAULT_TOP_K",
    "GRAPH_PANEL_WIDTH",
    "IMAGE_MAX_SIDE",
    "IMAGE_MIN_SIDE",
    "IMAGE_ORIGIN",
    "LIST_PANEL_WIDTH",
    "PANEL_WIDTH",
    "draw_scene_graph",
    "draw_scene_graph_png",
    "image_display_scale",
    "object_color",
    "save_png",
    "scene_graph_canvas_size",
    "scene_graph_to_networkx",
]

#: relations drawn when the caller does not say
DEFAULT_TOP_K = 10
#: the image is upscaled until its longer side is this many pixels ...
IMAGE_MIN_SIDE = 576
#: ... and downscaled when its longer side is longer than this
IMAGE_MAX_SIDE = 1024
#: width in pixels of the scene-graph panel
GRAPH_PANEL_WIDTH = 600
#: width in pixels of the ranked-relations panel
LIST_PANEL_WIDTH = 500
#: width in pixels of everything right of the image panel
PANEL_WIDTH = GRAPH_PANEL_WIDTH + LIST_PANEL_WIDTH

_DPI = 100
_PAD = 10            # px around the image inside its panel
_HEADER_H = 34       # px of the title line
_TITLE_H = 26        # px of a panel's title
#: canvas pixel (x, y) of the drawn image's top-left corner
IMAGE_ORIGIN = (_PAD, _HEADER_H + _TITLE_H + _PAD)
_MIN_BODY_H = 480    # px: the graph panel is at least this tall
_LINE_H = 23         # px per relation in the list
_LIST_TOP = 8        # px above the first relation line
_SANS = "DejaVu Sans"        # both fonts ship with matplotlib: the same glyphs everywhere
_MONO = "DejaVu Sans Mono"
_ANCHOR_WEIGHT = 1.0  # pull of the layout's fixed centre on every node (keeps unconnected parts close)
_SPRING_K = 0.6       # spring_layout's k is _SPRING_K / sqrt(number of nodes)
_ARC_BULGE = 24.0     # px: how far the two arcs of a pair related both ways bow out
_MAX_NAMED = 20       # objects named on the image when no relation is drawn
_EDGE_LEN = 170.0     # px: typical edge length the layout is scaled to (at most)
_EDGE_LABEL_T = (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73)  # where on a curve its label may go, preferred first
_PAIR_LABEL_T = (0.36, 0.3, 0.43, 0.5, 0.24, 0.58)  # a pair related both ways: each label in its own half
_BOX_LABEL_PT = 9.0
_NODE_PT = 10.0
_EDGE_PT = 8.5
_LIST_PT = 9.5
_TITLE_PT = 10.5
_HEADER_PT = 11.5

# matplotlib's tab20 in an order that puts strong, distinct colours first
_PALETTE: Tuple[Tuple[float, float, float], ...] = tuple(
    tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)) for h in (
        "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "17becf", "bcbd22",
        "7f7f7f", "aec7e8", "ffbb78", "98df8a", "ff9896", "c5b0d5", "c49c94", "f7b6d2", "9edae5",
        "dbdb8d", "c7c7c7"))


def object_color(object_id: int) -> Tuple[float, float, float]:
    """The RGB colour (0..1) of object ``object_id``: deterministic, cycling through 20 colours."""
    return _PALETTE[int(object_id) % len(_PALETTE)]


def _text_color(color: Sequence[float]) -> str:
    """Black on light backgrounds, white on dark ones."""
    r, g, b = color[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.6 else "white"


def _object_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['id']}:{obj['label']}"


def _fmt_score(score: float) -> str:
    return f"{score:.3f}" if score >= 0.001 or score == 0 else f"{score:.0e}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _pt(px: float) -> float:
    """Pixels -> points at the figure's dpi (font sizes, line widths)."""
    return px * 72.0 / _DPI


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image_rgb must be a uint8 H x W x 3 (RGB) or H x W (grey) array, got "
                         f"{image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image_rgb is empty: shape {image.shape}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def _parse(graph_json: Mapping[str, Any], top_k: int) -> Tuple[Dict[int, Mapping[str, Any]], List[Mapping[str, Any]],
                                                               List[Mapping[str, Any]]]:
    """(objects by id, all relations in the JSON's order, the first ``top_k`` of them)."""
    if top_k is None or int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    objects: Dict[int, Mapping[str, Any]] = {int(o["id"]): o for o in graph_json.get("objects", [])}
    relations: List[Mapping[str, Any]] = list(graph_json.get("relations", []))
    shown = relations[:int(top_k)]
    missing = sorted({int(r[k]) for r in shown for k in ("subject", "object")} - set(objects))
    if missing:
        raise ValueError(f"relations refer to object ids {missing} that are not in the graph's objects")
    return objects, relations, shown


def image_display_scale(height: int, width: int) -> float:
    """The factor the image is drawn at: its longer side becomes :data:`IMAGE_MIN_SIDE` when shorter
    (small images get room for legible labels), :data:`IMAGE_MAX_SIDE` when longer, else 1."""
    long_side = max(int(height), int(width), 1)
    if long_side < IMAGE_MIN_SIDE:
        return IMAGE_MIN_SIDE / long_side
    if long_side > IMAGE_MAX_SIDE:
        return IMAGE_MAX_SIDE / long_side
    return 1.0


def _display_size(height: int, width: int) -> Tuple[int, int]:
    s = image_display_scale(height, width)
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


def scene_graph_canvas_size(height: int, width: int, num_drawn: int) -> Tuple[int, int]:
    """``(H, W)`` in pixels of :func:`draw_scene_graph`'s output for an ``height x width`` image
    with ``num_drawn`` relations drawn (``min(top_k, len(relations))``)."""
    dh, dw = _display_size(height, width)
    list_h = _LIST_TOP + _LINE_H * max(int(num_drawn), 1) + _PAD
    body = max(dh + 2 * _PAD, _MIN_BODY_H, list_h)
    return _HEADER_H + _TITLE_H + body, dw + 2 * _PAD + PANEL_WIDTH


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------
def scene_graph_to_networkx(graph_json: Mapping[str, Any], top_k: int = DEFAULT_TOP_K):
    """The first ``top_k`` relations of ``graph_json`` (the dict of
    :func:`sgg.engine.predict.graph_to_json`; best first) as a ``networkx.DiGraph``.

    * nodes: the ids of the objects these relations use, in order of first use, with attributes
      ``label`` (``"id:name"``), ``name``, ``color`` (RGB 0..1, :func:`object_color`: the colour of
      the object's box) and ``box`` (xyxy, the JSON's pixels);
    * edges: subject -> object, one per ordered pair, with ``predicates``, ``scores`` and ``ranks``
      (1-based positions in the relation list) of every relation of that pair, and ``label``
      (``"predicate score"`` lines, one per relation).

    Graph attributes: ``num_relations`` (in the JSON) and ``num_drawn``.
    """
    import networkx as nx

    objects, relations, shown = _parse(graph_json, top_k)
    g = nx.DiGraph(num_relations=len(relations), num_drawn=len(shown))
    for rank, rel in enumerate(shown, start=1):
        s, o = int(rel["subject"]), int(rel["object"])
        for oid in (s, o):
            if oid not in g:
                obj = objects[oid]
                g.add_node(oid, label=_object_name(obj), name=str(obj["label"]), color=object_color(oid),
                           box=tuple(float(v) for v in obj["box"]))
        if not g.has_edge(s, o):
            g.add_edge(s, o, predicates=[], scores=[], ranks=[])
        e = g.edges[s, o]
        e["predicates"].append(str(rel["predicate"]))
        e["scores"].append(float(rel["score"]))
        e["ranks"].append(rank)
        e["label"] = "\n".join(f"{p} {_fmt_score(sc)}" for p, sc in zip(e["predicates"], e["scores"]))
    return g


def _layout(g, sizes: Mapping[int, Tuple[float, float]], width: float, height: float,
            image_hw: Tuple[float, float],
            edge_label_sizes: Optional[Mapping[Tuple[int, int], Tuple[float, float]]] = None) -> Dict[int, np.ndarray]:
    """Node centres in panel pixels (y down): spring layout started from the boxes' centres,
    stretched to the panel, then node boxes pushed apart until they do not overlap."""
    import networkx as nx

    nodes = list(g.nodes)
    if not nodes:
        return {}
    ih, iw = max(image_hw[0], 1.0), max(image_hw[1], 1.0)
    init = {}
    for i, n in enumerate(nodes):
        x1, y1, x2, y2 = g.nodes[n]["box"]
        # y up for the layout; a small deterministic offset separates boxes with the same centre
        init[n] = np.array([(x1 + x2) / 2 / iw + 0.013 * np.cos(2.4 * i),
                            1.0 - (y1 + y2) / 2 / ih + 0.013 * np.sin(2.4 * i)])
    if len(nodes) == 1:
        pos = {nodes[0]: np.zeros(2)}
    else:
        # relations pull with weight 1; a fixed anchor at the middle pulls every node weakly, so
        # unconnected parts of the graph stay together instead of drifting to the corners
        anchor = ("anchor",)
        und = nx.Graph()
        und.add_nodes_from(nodes)
        und.add_edges_from(g.edges, weight=1.0)
        und.add_edges_from(((anchor, n) for n in nodes), weight=_ANCHOR_WEIGHT)
        init[anchor] = np.array([0.5, 0.5])
        pos = nx.spring_layout(und, pos=init, fixed=[anchor], k=_SPRING_K / np.sqrt(len(nodes)),
                               iterations=200, seed=7)
    xy = np.array([pos[n] for n in nodes], dtype=np.float64)
    wh = np.array([sizes[n] for n in nodes], dtype=np.float64)
    xy[:, 1] = -xy[:, 1]  # y down from here on
    lo = wh / 2 + 12.0
    hi = np.array([width, height]) - wh / 2 - 12.0
    # stretch to the panel, but not so far that edges get much longer than _EDGE_LEN
    index = {n: i for i, n in enumerate(nodes)}
    lengths = [float(np.hypot(*(xy[index[s]] - xy[index[o]]))) for s, o in g.edges]
    typical = float(np.median(lengths)) if lengths else 0.0
    cap = _EDGE_LEN / typical if typical > 1e-9 else np.inf
    span = xy.max(axis=0) - xy.min(axis=0)
    room = np.maximum(np.array([width, height]) - wh.max(axis=0) - 24.0, 0.0)
    for d in range(2):
        f = min(room[d] / span[d], cap) if span[d] > 1e-9 else 0.0
        xy[:, d] = (width, height)[d] / 2 + (xy[:, d] - (xy[:, d].min() + xy[:, d].max()) / 2) * f
    # push overlapping node boxes apart, keeping room between related nodes for the edge's label
    gaps = np.tile(np.array([36.0, 30.0]), (len(nodes), len(nodes), 1))
    need: Dict[Tuple[int, int], np.ndarray] = {}
    for (s, o), (lw, lh) in (edge_label_sizes or {}).items():
        key = tuple(sorted((index[s], index[o])))
        # a pair related both ways shows two labels: room for both, stacked
        w0, h0 = need.get(key, (0.0, 0.0))
        need[key] = np.array([max(w0, lw), h0 + lh])
    for (i, j), (lw, lh) in need.items():
        gaps[i, j] = np.maximum(gaps[i, j], [lw + 40.0, lh + 44.0])
    for _ in range(300):
        moved = False
        for i in range(len(nodes)):
            for j in range(i + 1, len(nodes)):
                d = xy[j] - xy[i]
                over = (wh[i] + wh[j]) / 2 + gaps[i, j] - np.abs(d)
                if over[0] <= 0 or over[1] <= 0:
                    continue
                # move along the axis needing the smaller shift
                axis = 0 if over[0] < over[1] else 1
                sign = np.sign(d[axis]) if d[axis] != 0 else (1.0 if (i + j) % 2 else -1.0)
                xy[i, axis] -= sign * over[axis] / 2
                xy[j, axis] += sign * over[axis] / 2
                moved = True
        xy = np.minimum(np.maximum(xy, lo), np.maximum(hi, lo))
        if not moved:
            break
    return {n: xy[i] for i, n in enumerate(nodes)}


def _arc_control(p0: np.ndarray, p1: np.ndarray, rad: float) -> np.ndarray:
    """The control point of matplotlib's ``arc3,rad`` curve from p0 to p1 (y-down pixels)."""
    # arc3: mid + rad * (dy, -dx) in y-up display coordinates, i.e. mid + rad * (-dy, dx) with y down
    d = p1 - p0
    return (p0 + p1) / 2 + rad * np.array([-d[1], d[0]])


def _bezier(p0: np.ndarray, ctrl: np.ndarray, p1: np.ndarray, t: float) -> np.ndarray:
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p1


def _place_edge_labels(edges: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[float, float], Sequence[float]]],
                       node_rects: Sequence[Tuple[float, float, float, float]], width: float,
                       height: float) -> List[np.ndarray]:
    """Centres for edge labels: on each curve ``(p0, ctrl, p1, (w, h), ts)``, at the first of the
    curve parameters ``ts`` where the label covers the least of the nodes and of the labels placed
    before (then clamped into the panel)."""
    placed: List[Tuple[float, float, float, float]] = []
    out = []
    for p0, ctrl, p1, (lw, lh), ts in edges:
        best, best_cost = None, None
        for n, t in enumerate(ts):
            x, y = _bezier(p0, ctrl, p1, t)
            x = min(max(x, lw / 2 + 2), max(width - lw / 2 - 2, lw / 2 + 2))
            y = min(max(y, lh / 2 + 2), max(height - lh / 2 - 2, lh / 2 + 2))
            r = (x - lw / 2, y - lh / 2, x + lw / 2, y + lh / 2)
            cost = (3.0 * sum(_overlap(r, q) for q in node_rects) + sum(_overlap(r, q) for q in placed)) * 100 + n
            if best_cost is None or cost < best_cost:
                best, best_cost = (np.array([x, y]), r), cost
        placed.append(best[1])
        out.append(best[0])
    return out


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------
class _Canvas:
    """A figure of ``w x h`` pixels whose axes use pixel coordinates (y down)."""

    def __init__(self, w: int, h: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.w, self.h = w, h
        self.fig = Figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        self.renderer = self.canvas.get_renderer()

    def axes(self, x: float, y: float, w: float, h: float):
        ax = self.fig.add_axes((x / self.w, 1.0 - (y + h) / self.h, w / self.w, h / self.h))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
        return ax

    def text_size(self, s: str, size_pt: float, family: str = _SANS, weight: str = "normal") -> Tuple[float, float]:
        """(width, height) in pixels of ``s`` (several lines allowed)."""
        from matplotlib.font_manager import FontProperties

        prop = FontProperties(family=family, size=size_pt, weight=weight)
        lines = s.split("\n")
        ws, hs = [], []
        for line in lines:
            w, h, _ = self.renderer.get_text_width_height_descent(line or " ", prop, ismath=False)
            ws.append(w)
            hs.append(h)
        line_h = max(max(hs), size_pt * _DPI / 72.0)
        return max(ws), line_h * (1 + 1.2 * (len(lines) - 1))

    def to_array(self) -> np.ndarray:
        self.canvas.draw()
        out = np.asarray(self.canvas.buffer_rgba())[..., :3]
        # figure size x dpi can round to one pixel less; pad / crop to the exact canvas
        result = np.full((self.h, self.w, 3), 255, dtype=np.uint8)
        hh, ww = min(self.h, out.shape[0]), min(self.w, out.shape[1])
        result[:hh, :ww] = out[:hh, :ww]
        return result


def _overlap(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _place_box_labels(boxes: Sequence[Tuple[float, float, float, float]], sizes: Sequence[Tuple[float, float]],
                      width: float, height: float) -> List[Tuple[float, float]]:
    """Top-left corners for labels of ``sizes`` next to ``boxes`` (display pixels, y down), greedily
    in order: above the box, inside its top, below it, inside its bottom (left or right aligned,
    then stacked further away), the first that overlaps no placed label (else the least overlapping)."""
    placed: List[Tuple[float, float, float, float]] = []
    out: List[Tuple[float, float]] = []
    for (x1, y1, x2, y2), (tw, th) in zip(boxes, sizes):
        cands = []
        for k in range(4):
            for x in (x1, x2 - tw):
                cands += [(x, y1 - th * (k + 1)), (x, y1 + th * k), (x, y2 + th * k), (x, y2 - th * (k + 1))]
        best, best_cost = None, None
        for n, (x, y) in enumerate(cands):
            x = min(max(x, 0.0), max(width - tw, 0.0))
            y = min(max(y, 0.0), max(height - th, 0.0))
            r = (x, y, x + tw, y + th)
            # any overlap costs more than going down the list of candidates
            cost = sum(_overlap(r, p) for p in placed) * 1000.0 + n
            if best_cost is None or cost < best_cost:
                best, best_cost = r, cost
            if cost < 1000.0:
                break
        placed.append(best)
        out.append((best[0], best[1]))
    return out


def _chip(ax, x: float, y: float, s: str, color, size_pt: float, family: str = _SANS, va: str = "top",
          ha: str = "left", pad_px: float = 2.0, zorder: float = 4, **kw):
    """Text on a box filled with ``color`` (the object's colour)."""
    return ax.text(x, y, s, fontsize=size_pt, family=family, color=_text_color(color), va=va, ha=ha,
                   zorder=zorder, bbox=dict(boxstyle=f"square,pad={pad_px / (size_pt * _DPI / 72.0):.3f}",
                                            facecolor=color, edgecolor="none"), **kw)


def draw_scene_graph(image_rgb: np.ndarray, graph_json: Mapping[str, Any], top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """Draw ``graph_json`` (the dict of :func:`sgg.engine.predict.graph_to_json`) with
    ``image_rgb`` (uint8 ``[H, W, 3]`` RGB, or ``[H, W]`` grey: the image the graph belongs to).

    The first ``top_k`` relations (the JSON's order: best first) are drawn as a graph and listed
    as ``rank. subject —predicate→ object  score`` (module docstring). Boxes are in the pixels of
    the JSON's ``width`` x ``height`` and are rescaled when the image has another size. Returns
    uint8 ``[H', W', 3]`` of :func:`scene_graph_canvas_size`: the same input gives the same array.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

    image = _check_image(image_rgb)
    objects, relations, shown = _parse(graph_json, top_k)
    g = scene_graph_to_networkx(graph_json, top_k)
    h, w = image.shape[:2]
    jw, jh = float(graph_json.get("width") or w), float(graph_json.get("height") or h)
    dh, dw = _display_size(h, w)
    sx, sy = dw / jw, dh / jh  # JSON pixels -> displayed pixels
    canvas_h, canvas_w = scene_graph_canvas_size(h, w, len(shown))
    body_h = canvas_h - _HEADER_H - _TITLE_H
    c = _Canvas(canvas_w, canvas_h)

    # -- header, panel titles and separators ------------------------------------------------
    base = c.axes(0, 0, canvas_w, canvas_h)
    name = os.path.basename(str(graph_json["image"])) if graph_json.get("image") else "image"
    base.text(_PAD, _HEADER_H / 2, f"{name}   {w}x{h} px, {_count(len(objects), 'object')}, "
              f"{_count(len(relations), 'relation')}" + (f" (top {len(shown)} drawn)" if relations else ""),
              fontsize=_HEADER_PT, family=_SANS,
              fontweight="bold", va="center", ha="left")
    img_panel_w = dw + 2 * _PAD
    gx, lx = img_panel_w, img_panel_w + GRAPH_PANEL_WIDTH
    scale = image_display_scale(h, w)
    titles = ((0, f"image ({scale:.2g}x)" if scale != 1 else "image"),
              (gx, f"scene graph: top {_count(len(shown), 'relation')}" if shown else "scene graph"),
              (lx, f"ranked relations: top {len(shown)} of {len(relations)}" if shown else "ranked relations"))
    for x, t in titles:
        base.text(x + _PAD, _HEADER_H + _TITLE_H / 2, t, fontsize=_TITLE_PT, family=_SANS, color="0.25",
                  va="center", ha="left")
    for x in (gx, lx):
        base.plot([x, x], [_HEADER_H + 4, canvas_h - 4], color="0.82", linewidth=1.0)
    base.plot([4, canvas_w - 4], [_HEADER_H, _HEADER_H], color="0.82", linewidth=1.0)
    top = _HEADER_H + _TITLE_H

    # -- image panel ---------------------------------------------------------------------------
    import cv2

    shown_img = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC) \
        if (dh, dw) != (h, w) else image
    ax = c.axes(IMAGE_ORIGIN[0], IMAGE_ORIGIN[1], dw, dh)
    ax.imshow(shown_img, interpolation="nearest", extent=(0, dw, dh, 0))
    ax.set_xlim(0, dw)
    ax.set_ylim(dh, 0)
    in_graph = list(g.nodes)  # in order of first use: the best relations' objects get the best label spots
    drawn = set(in_graph)
    # no relation drawn: name the objects instead (the best scored ones)
    labelled = in_graph or sorted(objects, key=lambda i: (-float(objects[i].get("score", 0.0)), i))[:_MAX_NAMED]

    def dbox(oid):
        x1, y1, x2, y2 = (float(v) for v in objects[oid]["box"])
        return x1 * sx, y1 * sy, x2 * sx, y2 * sy

    for oid in sorted(objects, key=lambda i: (i in drawn, i)):  # thin boxes first
        x1, y1, x2, y2 = dbox(oid)
        thick = oid in drawn
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=object_color(oid),
                               linewidth=_pt(3.0 if thick else 1.2), alpha=1.0 if thick else 0.6,
                               zorder=3 if thick else 2))
    labels = [_object_name(objects[oid]) for oid in labelled]
    pad = 2.0
    sizes = [(tw + 2 * pad, th + 2 * pad) for tw, th in (c.text_size(s, _BOX_LABEL_PT) for s in labels)]
    corners = _place_box_labels([dbox(oid) for oid in labelled], sizes, dw, dh)
    for oid, s, (x, y) in zip(labelled, labels, corners):
        _chip(ax, x + pad, y + pad, s, object_color(oid), _BOX_LABEL_PT, pad_px=pad, zorder=5, clip_on=True)

    # -- graph panel ---------------------------------------------------------------------------
    gax = c.axes(gx, top, GRAPH_PANEL_WIDTH, body_h)
    if g.number_of_nodes() == 0:
        gax.text(GRAPH_PANEL_WIDTH / 2, body_h / 2, "no relations", fontsize=_TITLE_PT + 2, family=_SANS,
                 color="0.45", ha="center", va="center")
    else:
        node_pad = 4.0
        nsize = {}
        for n in g.nodes:
            tw, th = c.text_size(g.nodes[n]["label"], _NODE_PT)
            nsize[n] = (tw + 2 * node_pad + 4, th + 2 * node_pad)
        esize = {(s, o): c.text_size(e["label"], _EDGE_PT) for s, o, e in g.edges(data=True)}
        pos = _layout(g, nsize, GRAPH_PANEL_WIDTH, body_h, (jh, jw), esize)
        patches = {}
        for n in g.nodes:
            (x, y), (bw, bh) = pos[n], nsize[n]
            col = g.nodes[n]["color"]
            p = FancyBboxPatch((x - bw / 2, y - bh / 2), bw, bh, boxstyle="round,pad=0,rounding_size=5",
                               facecolor=col, edgecolor="0.2", linewidth=_pt(1.0), zorder=3)
            gax.add_patch(p)
            patches[n] = p
            gax.text(x, y, g.nodes[n]["label"], fontsize=_NODE_PT, family=_SANS, color=_text_color(col),
                     ha="center", va="center_baseline", zorder=4)
        curves = []
        for s, o, e in g.edges(data=True):
            p0, p1 = pos[s], pos[o]
            # a pair related both ways: two arcs bulging _ARC_BULGE px to either side
            both = g.has_edge(o, s)
            rad = 2 * _ARC_BULGE / max(float(np.hypot(*(p1 - p0))), 1.0) if both else 0.0
            best = min(e["ranks"])
            lw = 2.2 if best <= 3 else (1.6 if best <= 10 else 1.2)
            gax.add_patch(FancyArrowPatch(tuple(p0), tuple(p1), arrowstyle="-|>", mutation_scale=14,
                                          connectionstyle=f"arc3,rad={rad:.4f}", patchA=patches[s], patchB=patches[o],
                                          shrinkA=1, shrinkB=1, color="0.3", linewidth=_pt(lw), zorder=2))
            tw, th = esize[s, o]
            curves.append((p0, _arc_control(p0, p1, rad), p1, (tw + 8, th + 6),
                           _PAIR_LABEL_T if both else _EDGE_LABEL_T, e["label"]))
        rects = [(pos[n][0] - nsize[n][0] / 2, pos[n][1] - nsize[n][1] / 2, pos[n][0] + nsize[n][0] / 2,
                  pos[n][1] + nsize[n][1] / 2) for n in g.nodes]
        centres = _place_edge_labels([cv[:5] for cv in curves], rects, GRAPH_PANEL_WIDTH, body_h)
        for (mx, my), cv in zip(centres, curves):
            gax.text(mx, my, cv[5], fontsize=_EDGE_PT, family=_SANS, color="0.1", ha="center",
                     va="center", zorder=5, linespacing=1.15,
                     bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="0.75", alpha=0.9,
                               linewidth=_pt(0.8)))

    # -- ranked list ---------------------------------------------------------------------------
    lax = c.axes(lx, top, LIST_PANEL_WIDTH, body_h)
    if not shown:
        lax.text(_PAD, _LIST_TOP, "no relations", fontsize=_LIST_PT, family=_MONO, color="0.45",
                 va="top", ha="left")
    cw = c.text_size("M" * 20, _LIST_PT, _MONO)[0] / 20  # monospace: one advance per character
    score_w = 6
    max_chars = int((LIST_PANEL_WIDTH - 2 * _PAD) / cw) - score_w - 2
    rank_w = len(str(len(shown))) + 2
    for n, rel in enumerate(shown):
        y = _LIST_TOP + n * _LINE_H + 3
        s, o = int(rel["subject"]), int(rel["object"])
        parts = [_object_name(objects[s]), str(rel["predicate"]), _object_name(objects[o])]
        # shorten the longest part until the line fits (long class names)
        while rank_w + sum(map(len, parts)) + 6 > max_chars:
            k = max(range(3), key=lambda i: len(parts[i]))
            if len(parts[k]) <= 4:
                break
            parts[k] = parts[k][:-2] + "…"
        subj, pred, obj = parts
        x = _PAD
        lax.text(x + (rank_w - 1) * cw, y, f"{n + 1}.", fontsize=_LIST_PT, family=_MONO, va="top", ha="right")
        x += rank_w * cw
        _chip(lax, x, y, subj, object_color(s), _LIST_PT, _MONO, pad_px=1.5)
        x += (len(subj) + 1) * cw
        lax.text(x, y, f"—{pred}→", fontsize=_LIST_PT, family=_MONO, va="top", ha="left")
        x += (len(pred) + 3) * cw
        _chip(lax, x, y, obj, object_color(o), _LIST_PT, _MONO, pad_px=1.5)
        lax.text(LIST_PANEL_WIDTH - _PAD, y, _fmt_score(float(rel["score"])), fontsize=_LIST_PT, family=_MONO,
                 color="0.35", va="top", ha="right")
    return c.to_array()


def save_png(path: str, image_rgb: np.ndarray) -> str:
    """Write a uint8 RGB image as PNG (creates the folder); raises naming ``path`` on failure."""
    import cv2

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ok = cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not write the PNG '{path}' (is the folder writable and the name a .png?)")
    return path


def draw_scene_graph_png(image_rgb: np.ndarray, graph_json: Mapping[str, Any], path: str,
                         top_k: int = DEFAULT_TOP_K) -> str:
    """:func:`draw_scene_graph` written to ``path`` as a PNG (folders created); returns ``path``.

    ``graph_json`` is the dict of :func:`sgg.engine.predict.graph_to_json` (from a predicted or a
    ground-truth :class:`~sgg.structures.SceneGraph` and the class / predicate names)::

        doc = graph_to_json(graph, class_names, predicate_names, top_k_relations=20)
        draw_scene_graph_png(image_rgb, doc, "out/scene_graph.png", top_k=10)
    """
    return save_png(path, draw_scene_graph(image_rgb, graph_json, top_k=top_k))
