"""The scene-graph drawing (sgg.utils.visualize): canvas size, the networkx graph, colours,
determinism, empty and crowded graphs. Hand-made graph JSONs, no model."""
import cv2
import numpy as np
import pytest

from sgg.utils.visualize import (
    GRAPH_PANEL_WIDTH,
    IMAGE_MAX_SIDE,
    IMAGE_MIN_SIDE,
    IMAGE_ORIGIN,
    PANEL_WIDTH,
    draw_scene_graph,
    draw_scene_graph_png,
    image_display_scale,
    object_color,
    scene_graph_canvas_size,
    scene_graph_to_networkx,
)

H, W = 200, 180  # a SynthVG-sized image


def _doc():
    """5 objects on a 200 x 180 image; relations best first, with a repeated pair (0 -> 1 twice),
    a pair related both ways (1 -> 0) and object 4 used by no relation."""
    objects = [
        {"id": 0, "box": [10.0, 20.0, 80.0, 180.0], "label": "man", "label_id": 1, "score": 0.9},
        {"id": 1, "box": [60.0, 90.0, 170.0, 190.0], "label": "horse", "label_id": 2, "score": 0.8},
        {"id": 2, "box": [20.0, 10.0, 60.0, 40.0], "label": "hat", "label_id": 3, "score": 0.7},
        {"id": 5, "box": [120.0, 10.0, 175.0, 60.0], "label": "tree", "label_id": 4, "score": 0.6},
        {"id": 4, "box": [100.0, 150.0, 120.0, 170.0], "label": "dog", "label_id": 5, "score": 0.5},
    ]
    rel = lambda s, p, o, sc: {"subject": s, "predicate": p, "predicate_id": 1, "object": o, "score": sc}  # noqa: E731
    relations = [rel(0, "riding", 1, 0.9), rel(0, "on", 1, 0.5), rel(0, "wearing", 2, 0.4), rel(1, "near", 0, 0.3),
                 rel(1, "near", 5, 0.2), rel(2, "on", 5, 0.01)]
    return {"image": "some/dir/photo.jpg", "width": W, "height": H, "objects": objects, "relations": relations}


def _image(h=H, w=W):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 200)], -1).astype(np.uint8)


def _has_color(region, rgb, tol=12):
    return bool((np.abs(region.reshape(-1, 3).astype(int) - np.array(rgb)).max(axis=1) <= tol).any())


def _rgb255(oid):
    return [round(c * 255) for c in object_color(oid)]


def test_canvas_is_larger_than_a_small_image_and_holds_the_graph_panel():
    out = draw_scene_graph(_image(), _doc(), top_k=4)
    s = image_display_scale(H, W)
    assert s == pytest.approx(IMAGE_MIN_SIDE / H)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[:2] == scene_graph_canvas_size(H, W, 4)
    dw = round(W * s)
    assert out.shape[1] == dw + 2 * IMAGE_ORIGIN[0] + PANEL_WIDTH and out.shape[1] > dw + GRAPH_PANEL_WIDTH
    assert out.shape[0] >= round(H * s) > 2 * H
    # the image itself is drawn upscaled at IMAGE_ORIGIN: its middle pixel lands in the middle
    x0, y0 = IMAGE_ORIGIN
    got = out[y0 + round(H * s / 2), x0 + round(W * s * 0.3)].astype(int)
    want = _image()[H // 2, round(W * 0.3)].astype(int)
    assert np.abs(got - want).max() <= 8
    # the graph panel and the list are not blank
    graph = out[:, x0 + dw + x0:x0 + dw + x0 + GRAPH_PANEL_WIDTH]
    assert (graph < 100).any()
    assert (out[80:, -PANEL_WIDTH + GRAPH_PANEL_WIDTH:] < 100).any()


def test_display_scale_upscales_small_and_caps_large_images():
    assert image_display_scale(100, 50) == pytest.approx(IMAGE_MIN_SIDE / 100)
    assert image_display_scale(700, 800) == 1.0
    assert image_display_scale(3000, 1000) == pytest.approx(IMAGE_MAX_SIDE / 3000)
    big = np.zeros((1500, 900, 3), np.uint8)
    doc = {"image": None, "width": 900, "height": 1500, "objects": [], "relations": []}
    out = draw_scene_graph(big, doc)
    assert out.shape[:2] == scene_graph_canvas_size(1500, 900, 0)
    assert out.shape[0] < 1500 and out.shape[1] == round(900 * IMAGE_MAX_SIDE / 1500) + 20 + PANEL_WIDTH


def test_scene_graph_to_networkx_nodes_edges_labels_and_colours():
    doc = _doc()
    g = scene_graph_to_networkx(doc, top_k=5)
    # nodes: objects of the top 5 relations, in order of first use; 4 (no relation) is left out
    assert list(g.nodes) == [0, 1, 2, 5]
    assert [g.nodes[n]["label"] for n in g] == ["0:man", "1:horse", "2:hat", "5:tree"]
    for n in g:
        assert g.nodes[n]["color"] == object_color(n)
    assert g.nodes[5]["box"] == (120.0, 10.0, 175.0, 60.0)
    # edges subject -> object; the repeated pair is one edge with both predicates, best first
    assert sorted(g.edges) == [(0, 1), (0, 2), (1, 0), (1, 5)]
    e = g.edges[0, 1]
    assert e["predicates"] == ["riding", "on"] and e["scores"] == [0.9, 0.5] and e["ranks"] == [1, 2]
    assert e["label"] == "riding 0.900\non 0.500"
    assert g.edges[1, 0]["label"] == "near 0.300" and g.edges[1, 0]["ranks"] == [4]
    assert g.graph == {"num_relations": 6, "num_drawn": 5}
    assert g.number_of_edges() == 4 and not any(s == o for s, o in g.edges)
    # top_k cuts the relation list
    assert list(scene_graph_to_networkx(doc, top_k=1).edges) == [(0, 1)]
    assert scene_graph_to_networkx(doc, top_k=0).number_of_nodes() == 0
    assert scene_graph_to_networkx(doc, top_k=100).number_of_edges() == 5


def test_colours_of_boxes_and_nodes_match():
    doc = _doc()
    out = draw_scene_graph(_image(), doc, top_k=5)
    s = image_display_scale(H, W)
    x0, y0 = IMAGE_ORIGIN
    dw = round(W * s)
    graph = out[:, x0 + dw + x0:x0 + dw + x0 + GRAPH_PANEL_WIDTH]
    for oid in (0, 1, 2, 5):
        box = next(o["box"] for o in doc["objects"] if o["id"] == oid)
        # the box's left edge, half-way down, carries the object's colour ...
        x, y = x0 + round(box[0] * s), y0 + round((box[1] + box[3]) / 2 * s)
        assert _has_color(out[y - 3:y + 4, x - 3:x + 4], _rgb255(oid)), oid
        # ... and so does its node in the graph panel
        assert _has_color(graph, _rgb255(oid)), oid
    # object 4 is in no drawn relation: no node of its colour (brown) in the graph panel
    assert not _has_color(graph, _rgb255(4), tol=3)


def test_same_input_same_pixels_and_png_bytes(tmp_path):
    doc, img = _doc(), _image()
    a = draw_scene_graph(img, doc, top_k=6)
    b = draw_scene_graph(img.copy(), {**doc}, top_k=6)
    assert np.array_equal(a, b)
    p1 = draw_scene_graph_png(img, doc, str(tmp_path / "a" / "one.png"), top_k=6)
    p2 = draw_scene_graph_png(img, doc, str(tmp_path / "two.png"), top_k=6)
    assert p1 == str(tmp_path / "a" / "one.png")
    with open(p1, "rb") as f1, open(p2, "rb") as f2:
        assert f1.read() == f2.read()
    back = cv2.cvtColor(cv2.imread(p1), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, a)


def test_no_relations_still_draws_the_image_and_says_so():
    doc = {**_doc(), "relations": []}
    out = draw_scene_graph(_image(), doc)
    assert out.shape[:2] == scene_graph_canvas_size(H, W, 0)
    s = image_display_scale(H, W)
    x0, y0 = IMAGE_ORIGIN
    got = out[y0 + round(H * s / 2), x0 + round(W * s * 0.3)].astype(int)
    assert np.abs(got - _image()[H // 2, round(W * 0.3)].astype(int)).max() <= 8
    graph = out[y0:, x0 + round(W * s) + x0 + 5:x0 + round(W * s) + x0 + GRAPH_PANEL_WIDTH - 5]
    assert (graph < 200).any()  # the "no relations" note
    assert scene_graph_to_networkx(doc).number_of_nodes() == 0
    # no objects at all, JSON without a size: the image's own size is used
    empty = draw_scene_graph(_image(), {"objects": [], "relations": []})
    assert empty.shape[:2] == scene_graph_canvas_size(H, W, 0)


def test_many_objects_and_relations():
    rng = np.random.default_rng(0)
    objects = []
    for i in range(30):
        x1, y1 = rng.uniform(0, 150, 2)
        objects.append({"id": i, "box": [float(x1), float(y1), float(x1 + rng.uniform(5, 60)),
                                          float(y1 + rng.uniform(5, 60))], "label": f"thing{i % 7}",
                        "label_id": 1, "score": 0.5})
    relations = [{"subject": int(s), "predicate": "in front of", "predicate_id": 1, "object": int(o),
                  "score": 0.9 ** k} for k, (s, o) in enumerate(rng.permutation(30).reshape(15, 2)[:10])]
    doc = {"image": "x.jpg", "width": W, "height": H, "objects": objects, "relations": relations}
    out = draw_scene_graph(_image(), doc, top_k=10)
    assert out.shape[:2] == scene_graph_canvas_size(H, W, 10)
    g = scene_graph_to_networkx(doc, top_k=10)
    assert g.number_of_nodes() == 20 and g.number_of_edges() == 10
    # 30 relations listed: the canvas grows to hold the list
    more = {**doc, "relations": relations * 3}
    tall = draw_scene_graph(_image(), more, top_k=30)
    assert tall.shape[0] == scene_graph_canvas_size(H, W, 30)[0] > out.shape[0]


def test_boxes_follow_the_image_size_and_grey_images():
    doc = _doc()
    # the same graph on an image twice as large: boxes are rescaled, the drawing is the same size
    # as the JSON's (both images are drawn at IMAGE_MIN_SIDE)
    big = cv2.resize(_image(), (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    a, b = draw_scene_graph(_image(), doc), draw_scene_graph(big, doc)
    assert a.shape == b.shape
    s = image_display_scale(H, W)
    x0, y0 = IMAGE_ORIGIN
    box = doc["objects"][1]["box"]
    x, y = x0 + round(box[0] * s), y0 + round((box[1] + box[3]) / 2 * s)
    assert _has_color(b[y - 3:y + 4, x - 3:x + 4], _rgb255(1))
    grey = draw_scene_graph(_image()[..., 0], doc)
    assert grey.shape == a.shape


def test_errors():
    doc = _doc()
    with pytest.raises(ValueError, match="uint8"):
        draw_scene_graph(_image().astype(np.float32), doc)
    with pytest.raises(ValueError, match="uint8"):
        draw_scene_graph(np.zeros((4, 4, 4), np.uint8), doc)
    bad = {**doc, "relations": [{"subject": 0, "predicate": "on", "predicate_id": 1, "object": 9, "score": 1.0}]}
    with pytest.raises(ValueError, match=r"object ids \[9\]"):
        draw_scene_graph(_image(), bad)
    with pytest.raises(ValueError, match="top_k"):
        scene_graph_to_networkx(doc, top_k=-1)
