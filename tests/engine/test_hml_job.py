"""HML wired into the relation job: stage 1 -> Fisher + stage-1 files -> stage 2 (tiny, CPU)."""
import json
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import TINY_TRANSFORMER_OPTS, make_synthvg, tiny_config  # noqa: E402

HML = ["MODEL.HML.ENABLED", "True", "MODEL.HML.HIERARCHY", "dataset", "MODEL.HML.FISHER_BATCHES", "2",
       "MODEL.USE_CONFIDENCE", "False", "MODEL.DISTILL_TEMPERATURE", "2", "SOLVER.LAMBDA_FOR_PARAM", "1.0",
       "SOLVER.ALPHA_FOR_FISHER", "0.5", "SOLVER.DISTILL_TYPE", "l2", "SOLVER.MAX_ITER", "4",
       "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.TO_VAL", "False", "SOLVER.WARMUP_ITERS", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("hmldata"), num_images=24)


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_hml_both_stages_then_stage2_alone(data_root, tmp_path):
    from sgg.distill import hml
    from sgg.engine.relation import train_relation

    out = tmp_path / "run"
    cfg = tiny_config(data_root, out, "predcls", *HML)
    res = train_relation(cfg)
    assert res["state"] == "completed"
    st = hml.load_stage1(str(out / "stage1"))
    assert st.fisher and set(st.fisher) == set(st.theta_star)
    assert all(((f >= 1e-20) & (f <= 1.0)).all() for f in st.fisher.values())
    assert not any("freq_bias" in k for k in st.theta_star)
    # stage 1 trained 2 iterations with the coarse loss only; stage 2 logs every HML term
    s1 = [r for r in _rows(out / "stage1" / "metrics.json") if "loss_rel" in r]
    assert s1 and "loss_distill" not in s1[-1]
    s2 = [r for r in _rows(out / "metrics.json") if "loss_rel" in r]
    assert {"loss_rel", "loss_distill", "loss_anchor"} <= set(s2[-1])
    assert all(r[k] is None or r[k] == r[k] for r in s2 for k in ("loss_distill", "loss_anchor"))
    assert (out / "inference" / "synthvg_tiny_test" / "relation_metrics.json").is_file()

    # stage 2 alone, in another folder, from the stage-1 files
    out2 = tmp_path / "stage2_only"
    cfg2 = tiny_config(data_root, out2, "predcls", *HML, "MODEL.HML.STAGE", "2",
                       "MODEL.HML.STAGE1_DIR", str(out / "stage1"))
    res2 = train_relation(cfg2)
    assert res2["state"] == "completed"
    assert not (out2 / "stage1").exists()
    rows = [r for r in _rows(out2 / "metrics.json") if "loss_anchor" in r]
    assert rows and rows[-1]["iteration"] == hml.stage_iterations(cfg2)[1]

    # stage 2 starts as stage 1 did: MODEL.WEIGHT (here with a shifted frozen detector tensor)
    # first, then the stage-1 relation head over it
    ckpt = torch.load(str(out / "model_final.pth"), map_location="cpu", weights_only=False)
    key = next(k for k in ckpt["model"] if k.startswith("detector.backbone.") and k.endswith("weight"))
    weights = {"model": {k: v + 1.0 if k == key else v for k, v in ckpt["model"].items()}}
    torch.save(weights, str(tmp_path / "init.pth"))
    out3 = tmp_path / "stage2_from_weight"
    cfg3 = tiny_config(data_root, out3, "predcls", *HML, "MODEL.HML.STAGE", "2", "SOLVER.MAX_ITER", "1",
                       "MODEL.HML.STAGE1_DIR", str(out / "stage1"), "MODEL.WEIGHT", str(tmp_path / "init.pth"))
    assert train_relation(cfg3)["state"] == "completed"
    final = torch.load(str(out3 / "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    assert torch.equal(final[key], weights["model"][key])


def test_stage2_starts_at_stage1_weights(data_root, tmp_path):
    """At the first stage-2 step the anchoring penalty is ~0 (theta == theta*)."""
    from sgg.distill import hml
    from sgg.engine.relation import build_relation_model, train_relation

    out = tmp_path / "s1"
    cfg = tiny_config(data_root, out, "predcls", *HML, "MODEL.HML.STAGE", "1")
    assert train_relation(cfg)["stage"] == 1
    st = hml.load_stage1(str(out / "stage1"))
    model, _, stats = build_relation_model(cfg)
    hml.init_from_stage1(model, st)
    params = hml.hml_anchor_params(model)
    for k, v in st.theta_star.items():
        assert torch.equal(params[k].detach().cpu(), v.cpu()), k


@pytest.mark.parametrize("mode", ["sgcls", "sgdet"])
def test_hml_runs_in_sgcls_and_sgdet(mode, data_root, tmp_path):
    from sgg.distill import hml
    from sgg.engine.relation import train_relation

    out = tmp_path / mode
    cfg = tiny_config(data_root, out, mode, *HML)
    res = train_relation(cfg)
    assert res["state"] == "completed"
    st = hml.load_stage1(str(out / "stage1"))
    assert st.fisher and st.meta["mode"] == mode
    rows = [r for r in _rows(out / "metrics.json") if "loss_rel" in r]
    assert {"loss_rel", "loss_distill", "loss_anchor", "loss_refine_obj"} <= set(rows[-1])
    metrics = res["synthvg_tiny_test"]
    assert metrics["mode"] == mode and "mR@50" in metrics


# tiny sizes for the predictors whose reference sizes are not config keys
_PREDICTOR_OPTS = {
    "IMPPredictor": [],
    "VCTreePredictor": [],
    "TransformerPredictor": TINY_TRANSFORMER_OPTS,
    "PENetPredictor": [],
    "CausalAnalysisPredictor": [],
}


@pytest.mark.parametrize("predictor", sorted(_PREDICTOR_OPTS))
def test_hml_stage2_runs_for_every_predictor(predictor, data_root, tmp_path, monkeypatch):
    """HML (class-balanced stage 2, distillation from the stage-1 parent, Fisher anchoring) with
    each predictor: both stages train, every term is finite, the anchor covers the predictor's
    parameters and never the frequency bias."""
    from sgg.distill import hml
    from sgg.engine.relation import train_relation
    from sgg.modeling.relation.predictors.penet import PENetPredictor

    monkeypatch.setattr(PENetPredictor, "REFERENCE_SIZES", {"mlp_dim": 16, "embed_dim": 8, "dropout_rate": 0.2})
    out = tmp_path / predictor
    cfg = tiny_config(data_root, out, "predcls", *HML, "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor,
                      *_PREDICTOR_OPTS[predictor])
    res = train_relation(cfg)
    assert res["state"] == "completed"
    st = hml.load_stage1(str(out / "stage1"))
    assert st.theta_star and not any("freq_bias" in k for k in st.theta_star)
    assert all(k.startswith("relation_head.predictor.") for k in st.theta_star)
    s2 = [r for r in _rows(out / "metrics.json") if "loss_rel" in r]
    assert {"loss_rel", "loss_distill", "loss_anchor"} <= set(s2[-1])
    assert all(r[k] == r[k] for r in s2 for k in ("loss_rel", "loss_distill", "loss_anchor"))  # not NaN
    assert (out / "inference" / "synthvg_tiny_test" / "relation_metrics.json").is_file()
