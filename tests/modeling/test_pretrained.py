"""Build first, load after: building a model reads no file, whatever the config names; the load
step (sgg.modeling.pretrained.load_pretrained) reads what the config names, names the key of a
missing file, and consumes no random numbers."""
import builtins
import os

import pytest
import torch

from sgg.modeling.meta_arch import build_sgg_model
from sgg.modeling.pretrained import load_pretrained

try:
    from .test_one_stage import onestage_opts
    from .two_stage_fixtures import tiny_config
except ImportError:  # run as a plain file
    from test_one_stage import onestage_opts
    from two_stage_fixtures import tiny_config

NAMES = ["__background__"] + [f"c{i}" for i in range(1, 6)]
PREDICATES = ["__background__", "on", "has", "near"]


def _refuse_under(monkeypatch, root):
    """Opening, stat-ing or torch.load-ing any path under ``root`` (where the config's files are)
    fails the test; torch.load fails for any file."""
    root = str(root)
    real = {"open": builtins.open, "isfile": os.path.isfile, "exists": os.path.exists}

    def guard(name):
        def fn(path, *args, **kwargs):
            if str(path).startswith(root):
                raise AssertionError(f"{name}({path}) while building")
            return real[name](path, *args, **kwargs)
        return fn

    def no_load(*args, **kwargs):
        raise AssertionError(f"torch.load{args[:1]} while building")

    monkeypatch.setattr(builtins, "open", guard("open"))
    monkeypatch.setattr(os.path, "isfile", guard("isfile"))
    monkeypatch.setattr(os.path, "exists", guard("exists"))
    monkeypatch.setattr(torch, "load", no_load)


@pytest.fixture
def no_disk(monkeypatch, tmp_path):
    _refuse_under(monkeypatch, tmp_path)
    yield
    monkeypatch.undo()


def _two_stage_cfg(tmp_path, mode):
    missing = str(tmp_path / "missing")
    return tiny_config(str(tmp_path / "data"), str(tmp_path / "out"), mode,
                       "GLOVE_DIR", missing, "MODEL.BACKBONE.WEIGHTS", missing + "/r18.pth",
                       "MODEL.PRETRAINED_DETECTOR_CKPT", missing + "/det.pth",
                       "MODEL.ROI_RELATION_HEAD.WORD_VECTOR_CACHE", "True")


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_two_stage_build_reads_no_file_and_the_load_step_names_the_key(tmp_path, mode, no_disk):
    cfg = _two_stage_cfg(tmp_path, mode)
    stats = {"obj_classes": NAMES, "rel_classes": PREDICATES, "predicate_counts": [0, 5, 3, 1]}
    model = build_sgg_model(cfg, stats, len(NAMES), len(PREDICATES))  # no file touched (fixture)
    assert model.metadata == {"class_names": NAMES, "predicate_names": PREDICATES, "protocol": mode,
                              "meta_architecture": "GeneralizedRCNN", "predicate_counts": [0, 5, 3, 1]}


def test_load_step_reads_what_the_config_names(tmp_path):
    cfg = _two_stage_cfg(tmp_path, "sgcls")
    model = build_sgg_model(cfg, {"obj_classes": NAMES, "rel_classes": PREDICATES}, len(NAMES), len(PREDICATES))
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.WEIGHTS"):
        load_pretrained(model, cfg)

    # backbone weights and a detector checkpoint on disk: both read, the relation head's branches
    # start from the loaded box head, the GloVe cache is written, and no random number is drawn
    from torchvision.models import resnet18

    from sgg.checkpoint import Checkpointer

    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    donor = build_sgg_model(cfg, None, len(NAMES), len(PREDICATES))
    Checkpointer(donor.detector, str(tmp_path / "det")).save("model_final")
    c = cfg.clone()
    c.defrost()
    c.MODEL.BACKBONE.WEIGHTS = str(tmp_path / "r18.pth")
    c.MODEL.PRETRAINED_DETECTOR_CKPT = str(tmp_path / "det")
    c.freeze()
    rng = torch.get_rng_state()
    done = load_pretrained(model, c)
    assert torch.equal(torch.get_rng_state(), rng)
    assert done["detector"] == str(tmp_path / "det") and done["backbone"] == str(tmp_path / "r18.pth")
    assert "word_vectors" in done and list((tmp_path / "out").glob("word_vectors_*.pt"))
    for k, v in donor.detector.state_dict().items():
        assert torch.equal(model.detector.state_dict()[k], v), k
    head = model.relation_head
    for branch in (head.box_feature_extractor.head, head.union_feature_extractor.head):
        for k, v in model.detector.box_head.state_dict().items():
            assert torch.equal(branch.state_dict()[k], v), k


def test_one_stage_build_reads_no_file(tmp_path, monkeypatch):
    from sgg.config import load_config

    cfg = load_config(opts=onestage_opts(str(tmp_path / "data"), str(tmp_path / "out"), "sgdet",
                                         "MODEL.ONESTAGE.BACKBONE_WEIGHTS", str(tmp_path / "missing.pth")))

    with monkeypatch.context() as m:
        _refuse_under(m, tmp_path)
        model = build_sgg_model(cfg, None, len(NAMES), len(PREDICATES))
    assert model.metadata["class_names"][1] == "class_1"  # generic names without statistics
    with pytest.raises(FileNotFoundError, match="MODEL.ONESTAGE.BACKBONE_WEIGHTS"):
        load_pretrained(model, cfg)
