"""Streaming evaluator, distributed gathering, predictions files and reports."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from sgg.evaluation import (PredictionsFileError, SceneGraphEvaluator, evaluate_predictions_file,
                            evaluate_relations, format_report,
                            format_summary_table, load_predictions, plot_per_predicate_recall,
                            predicate_order, save_predictions, write_json, write_report)
from sgg.evaluation import evaluator as evaluator_module

P = 6
ZEROSHOT = np.array([[1, 2, 3], [2, 1, 1], [3, 3, 2], [4, 5, 6], [1, 1, 1]])


def dataset(sg, mode, n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = [sg.random_image(rng, mode) for _ in range(n)]
    images += [sg.large_image(rng, mode, num_objects=13, num_predicates=P) for _ in range(2)]
    gts = []
    for i, (gt, _) in enumerate(images):
        gts.append(dict(gt, image_id=i))
    return gts, [pred for _, pred in images]


def _without(metrics, *keys):
    return {k: v for k, v in metrics.items() if k not in keys}


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_streaming_equals_public_function(sg, mode):
    gts, preds = dataset(sg, mode)
    expected = evaluate_relations(gts, preds, mode, P, zeroshot_triplets=ZEROSHOT)
    ev = SceneGraphEvaluator(mode, P, zeroshot_triplets=ZEROSHOT)
    for start in range(0, len(gts), 4):
        ev.process(gts[start:start + 4], preds[start:start + 4])
    sg.assert_same_metrics(ev.evaluate(), expected)
    ev.reset()
    assert ev.records == []
    with pytest.raises(ValueError, match="no image to evaluate"):
        ev.evaluate()


def test_arrival_order_and_duplicates_do_not_matter(sg):
    gts, preds = dataset(sg, "sgcls")
    expected = evaluate_relations(gts, preds, "sgcls", P)
    order = list(range(len(gts))) + [3, 7]  # two images seen twice (padded distributed sampler)
    random.Random(0).shuffle(order)
    ev = SceneGraphEvaluator("sgcls", P)
    for i in order:
        ev.process(gts[i], preds[i])  # one image (not a list) is accepted too
    sg.assert_same_metrics(ev.evaluate(), expected)


def test_torch_inputs(sg):
    gts, preds = dataset(sg, "sgdet", n=15)
    expected = evaluate_relations(gts, preds, "sgdet", P)
    tgts = [{k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in g.items()} for g in gts]
    tpreds = [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()} for p in preds]
    ev = SceneGraphEvaluator("sgdet", P)
    ev.process(tgts, tpreds)
    sg.assert_same_metrics(ev.evaluate(), expected)


def test_distributed_gather_to_rank0(sg, monkeypatch):
    gts, preds = dataset(sg, "predcls")
    expected = evaluate_relations(gts, preds, "predcls", P, zeroshot_triplets=ZEROSHOT)
    ranks = [SceneGraphEvaluator("predcls", P, zeroshot_triplets=ZEROSHOT) for _ in range(2)]
    for i in range(len(gts)):  # interleaved sharding, as a DistributedSampler does
        ranks[i % 2].process([gts[i]], [preds[i]])
    sent = []
    monkeypatch.setattr(evaluator_module.comm, "gather",
                        lambda obj, dst=0: sent.append(obj) or [ranks[0].records, ranks[1].records])
    sg.assert_same_metrics(ranks[0].evaluate(), expected)
    assert sent == [ranks[0].records]  # only compact records travel
    monkeypatch.setattr(evaluator_module.comm, "gather", lambda obj, dst=0: [])
    monkeypatch.setattr(evaluator_module.comm, "is_main_process", lambda: False)
    assert ranks[1].evaluate() == {}


def test_box_ap_through_the_evaluator(sg):
    gts, preds = dataset(sg, "sgdet", n=10)
    ev = SceneGraphEvaluator("sgdet", P, class_names=6)
    ev.process(gts, preds)
    metrics = ev.evaluate()
    assert 0.0 <= metrics["AP"] <= metrics["AP50"] <= 1.0
    from sgg.evaluation import evaluate_detection
    assert metrics["AP50"] == evaluate_detection(gts, preds, 6, "sgdet")["AP50"]


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_save_load_round_trip(sg, tmp_path, mode):
    gts, preds = dataset(sg, mode)
    ev = SceneGraphEvaluator(mode, P, zeroshot_triplets=ZEROSHOT)
    ev.process(gts, preds)
    metrics = ev.evaluate()
    path = tmp_path / "preds.npz"
    ev.save(str(path), metadata={"model": "motifs", "iteration": 1200})
    loaded = load_predictions(str(path))
    assert loaded.mode == mode and loaded.ks == (20, 50, 100)
    assert loaded.metadata == {"model": "motifs", "iteration": 1200}
    assert [r.image_id for r in loaded.records] == list(range(len(gts)))
    for a, b in zip(loaded.records, ev.records):
        for name, value in vars(b).items():
            assert np.array_equal(getattr(a, name), value), name
    rescored = evaluate_predictions_file(str(path), P, zeroshot_triplets=ZEROSHOT)
    sg.assert_same_metrics(rescored, _without(metrics, "predicate_names"))
    # re-scoring may change the IoU threshold and use fewer/smaller K
    sg.assert_same_metrics(evaluate_predictions_file(str(path), P, iou_threshold=0.7, ks=(10, 50)),
                        evaluate_relations(gts, preds, mode, P, iou_threshold=0.7, ks=(10, 50)))
    with pytest.raises(ValueError, match="cannot score K=200"):
        evaluate_predictions_file(str(path), P, ks=(50, 200))


def test_bad_files_raise_errors_naming_the_file(sg, tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(PredictionsFileError, match="missing.npz"):
        load_predictions(str(missing))
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(PredictionsFileError, match="notes.npz"):
        load_predictions(str(text))
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(PredictionsFileError, match="array.npy.*not an sgg predictions file"):
        load_predictions(str(npy))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(PredictionsFileError, match="foreign.npz.*no '__meta__'"):
        load_predictions(str(foreign))
    other = tmp_path / "other.npz"
    np.savez(other, __meta__=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(PredictionsFileError, match="other.npz.*'something-else'"):
        load_predictions(str(other))

    gts, preds = dataset(sg, "sgdet", n=8)
    ev = SceneGraphEvaluator("sgdet", P)
    ev.process(gts, preds)
    good = save_predictions(str(tmp_path / "good"), ev.records, "sgdet")
    assert good.endswith("good.npz")
    with open(good, "rb") as f:
        data = f.read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PredictionsFileError, match="truncated.npz"):
        load_predictions(str(truncated))
    with np.load(good) as archive:
        arrays = dict(archive)
    arrays["ng_offsets"] = arrays["ng_offsets"][:-1]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)
    with pytest.raises(PredictionsFileError, match="broken.npz.*corrupted"):
        load_predictions(str(broken))


def _metrics_for_report(sg, mode="predcls"):
    gts, preds = dataset(sg, mode, n=20)
    names = ["__background__", "on", "has", "near", "of", "wearing", "riding"]
    return evaluate_relations(gts, preds, mode, P, zeroshot_triplets=ZEROSHOT,
                              predicate_names=names)


def test_report_uses_the_reference_wording(sg):
    metrics = _metrics_for_report(sg, "predcls")
    metrics["AP50"] = 0.25
    text = format_report(metrics)
    lines = text.splitlines()
    r = metrics
    assert ("SGG eval:     R @ 20: %.4f;     R @ 50: %.4f;     R @ 100: %.4f;  "
            "for mode=predcls, type=Recall(Main)." % (r["R@20"], r["R@50"], r["R@100"])) in lines
    assert any(l.startswith("SGG eval:  ng-R @ 20: ") and
               l.endswith("for mode=predcls, type=No Graph Constraint Recall(Main).") for l in lines)
    assert any(l.startswith("SGG eval:    zR @ 20: ") and l.endswith("type=Zero Shot Recall.") for l in lines)
    assert any(l.startswith("SGG eval: ng-zR @ 20: ") for l in lines)
    assert any(l.startswith("SGG eval:    mR @ 20: ") and l.endswith("type=Mean Recall.") for l in lines)
    assert any(l.startswith("SGG eval: ng-mR @ 20: ") for l in lines)
    assert any(l.startswith("SGG eval:     A @ 20: ") and l.endswith("type=TopK Accuracy.") for l in lines)
    assert any(l.startswith("SGG eval:     F @ 20: ") for l in lines)
    assert "Detection evaluation mAp=0.2500" in lines
    details = lines[lines.index("----------------------- Details ------------------------") + 1]
    assert details.startswith("(on:%.4f) (has:%.4f) " % tuple(metrics["per_predicate_R@100"][:2]))
    sgdet = format_report(_metrics_for_report(sg, "sgdet"))
    assert "A @" not in sgdet and "R @ 100" in sgdet
    summary = format_summary_table(metrics)
    assert f"{100 * metrics['R@50']:.2f}" in summary and "mR" in summary


def test_json_plot_and_report_files(sg, tmp_path):
    metrics = _metrics_for_report(sg, "sgcls")
    metrics["zR@20"] = float("nan")
    path = write_json(metrics, str(tmp_path / "m.json"))
    data = json.loads(open(path).read())
    assert data["R@50"] == metrics["R@50"] and 0 <= data["R@50"] <= 1  # fractions
    assert data["zR@20"] is None and len(data["per_predicate_R@100"]) == P
    freq = [0, 10, 500, 30, 30, 1, 90]  # with background first
    assert predicate_order(freq, P).tolist() == [1, 5, 2, 3, 0, 4]  # has, riding, near, of, on, wearing
    png = plot_per_predicate_recall(metrics, str(tmp_path / "plot.png"), predicate_frequency=freq)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    files = write_report(metrics, str(tmp_path / "out"), predicate_frequency=freq[1:])
    assert set(files) == {"text", "json", "plot"}
    assert "type=Recall(Main)." in open(files["text"]).read()
