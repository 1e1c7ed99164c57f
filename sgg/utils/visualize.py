"""Drawing a predicted scene graph: the image with its boxes, and a panel listing the relations.

:func:`draw_scene_graph` renders with matplotlib's Agg canvas directly (no pyplot, no global
backend change, safe in worker processes and without a display) and returns a uint8 RGB array:

    +----------------------------+----------------------+
    | image at its own size,     |  top-k relations     |
    | boxes of the objects in    |  1. man#0 —riding→   |
    | the top-k relations (thick,|     horse#3  0.812   |
    | labelled), others thin     |  ...                 |
    +----------------------------+----------------------+
      W pixels                     PANEL_WIDTH pixels

The canvas is ``W + PANEL_WIDTH`` wide and ``max(H, panel text height)`` tall (white below a short
image). Each object has a fixed colour from its id, the same in the image and in the panel.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

__all__ = ["PANEL_WIDTH", "draw_scene_graph", "object_color", "save_png"]

#: width in pixels of the relation panel right of the image
PANEL_WIDTH = 420
_DPI = 100
_LINE_H = 30  # panel pixels per relation (two text lines)
_PANEL_TOP = 30
_PANEL_FONT = 8.5  # points; at 100 dpi about 12 px

# matplotlib's tab20 in an order that puts strong, distinct colours first
_PALETTE: Tuple[Tuple[float, float, float], ...] = tuple(
    tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)) for h in (
        "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "17becf", "bcbd22",
        "7f7f7f", "aec7e8", "ffbb78", "98df8a", "ff9896", "c5b0d5", "c49c94", "f7b6d2", "9edae5",
        "dbdb8d", "c7c7c7"))


def object_color(object_id: int) -> Tuple[float, float, float]:
    """The RGB colour (0..1) of object ``object_id``: deterministic, cycling through 20 colours."""
    return _PALETTE[int(object_id) % len(_PALETTE)]


def _object_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['label']}#{obj['id']}"


def draw_scene_graph(image_rgb: np.ndarray, graph_json: Mapping[str, Any], top_k: int = 10) -> np.ndarray:
    """Render ``graph_json`` (the dict of :func:`sgg.engine.predict.graph_to_json`) over
    ``image_rgb`` (uint8 ``[H, W, 3]``, the image the graph was predicted on).

    The first ``top_k`` relations (the JSON's order: best first) are listed in the right panel as
    ``subject —predicate→ object  score``; their objects get thick, labelled boxes, the other
    objects of the JSON thin unlabelled ones. Returns uint8 ``[max(H, panel), W + PANEL_WIDTH, 3]``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_rgb must be a uint8 H x W x 3 array, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    objects: Dict[int, Mapping[str, Any]] = {int(o["id"]): o for o in graph_json.get("objects", [])}
    relations: List[Mapping[str, Any]] = list(graph_json.get("relations", []))
    shown = relations[:max(int(top_k), 0)]
    in_top = {int(r[k]) for r in shown for k in ("subject", "object")}
    missing = sorted(i for i in in_top if i not in objects)
    if missing:
        raise ValueError(f"relations refer to object ids {missing} that are not in the graph's objects")

    panel_h = _PANEL_TOP + _LINE_H * max(len(shown), 1) + 10
    canvas_h, canvas_w = max(h, panel_h), w + PANEL_WIDTH
    fig = Figure(figsize=(canvas_w / _DPI, canvas_h / _DPI), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)

    ax = fig.add_axes((0.0, 1.0 - h / canvas_h, w / canvas_w, h / canvas_h))
    ax.imshow(image, interpolation="nearest", extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    scale = max(h, w)
    thick = max(1.5, scale / 300.0)
    label_size = min(max(7.0, scale / 70.0), 16.0)
    # thin boxes first, so the relation objects are drawn on top
    for oid in sorted(objects, key=lambda i: (i in in_top, i)):
        x1, y1, x2, y2 = (float(v) for v in objects[oid]["box"])
        color = object_color(oid)
        top = oid in in_top
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=thick if top else max(0.6, thick / 3), alpha=1.0 if top else 0.55))
        if top:
            # above the box, or inside it when there is no room above
            above = y1 > 1.6 * label_size * _DPI / 72.0
            ax.text(x1, y1, _object_name(objects[oid]), fontsize=label_size, color="white",
                    va="bottom" if above else "top", ha="left", clip_on=True,
                    bbox=dict(facecolor=color, edgecolor="none", alpha=0.85, pad=1.0))

    px = fig.add_axes((w / canvas_w, 0.0, PANEL_WIDTH / canvas_w, 1.0))
    px.set_xlim(0, PANEL_WIDTH)
    px.set_ylim(canvas_h, 0)
    px.set_axis_off()
    title = f"top {len(shown)} of {len(relations)} relations" if relations else "no relations"
    px.text(10, 8, title, fontsize=_PANEL_FONT + 1, fontweight="bold", va="top", ha="left")
    for n, rel in enumerate(shown):
        y = _PANEL_TOP + n * _LINE_H
        s, o = int(rel["subject"]), int(rel["object"])
        px.add_patch(Rectangle((10, y + 2), 7, 10, color=object_color(s)))
        px.add_patch(Rectangle((19, y + 2), 7, 10, color=object_color(o)))
        px.text(32, y, f"{n + 1}. {_object_name(objects[s])} \u2014{rel['predicate']}\u2192 "
                f"{_object_name(objects[o])}", fontsize=_PANEL_FONT, va="top", ha="left", clip_on=True)
        px.text(44, y + 14, f"score {float(rel['score']):.4f}", fontsize=_PANEL_FONT - 1, color="0.35",
                va="top", ha="left")

    canvas.draw()
    out = np.asarray(canvas.buffer_rgba())[..., :3]
    # figure size x dpi can round to one pixel less; pad / crop to the exact canvas
    result = np.full((canvas_h, canvas_w, 3), 255, dtype=np.uint8)
    hh, ww = min(canvas_h, out.shape[0]), min(canvas_w, out.shape[1])
    result[:hh, :ww] = out[:hh, :ww]
    return result


def save_png(path: str, image_rgb: np.ndarray) -> str:
    """Write a uint8 RGB image as PNG (creates the folder); raises naming ``path`` on failure."""
    import cv2

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ok = cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not write the PNG '{path}' (is the folder writable and the name a .png?)")
    return path
