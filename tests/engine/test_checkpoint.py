"""Atomic checkpoints, corrupt-file errors, resume fallback, model loading rules, RNG state."""
import os
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from sgg.checkpoint import (
    CheckpointError,
    Checkpointer,
    get_rng_state,
    load_checkpoint_file,
    load_model_state,
    set_rng_state,
)
from sgg.solver import WarmupMultiStepLR


def _setup(tmp_path, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = WarmupMultiStepLR(opt, [5], warmup_iters=0)
    ck = Checkpointer(model, str(tmp_path), optimizer=opt, scheduler=sched, save_to_disk=True)
    return model, opt, sched, ck


def _one_step(model, opt, sched):
    loss = model(torch.randn(5, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def _last(tmp_path):
    return (tmp_path / "last_checkpoint").read_text().strip()


def test_save_and_load_roundtrip(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    for _ in range(6):
        _one_step(model, opt, sched)
    path = ck.save("model_0000006", iteration=6, note="hello")
    assert os.path.basename(path) == "model_0000006.pth" and _last(tmp_path) == "model_0000006.pth"
    # only tensors and plain containers: loadable with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "scheduler", "iteration", "rng_states"} <= set(raw)

    model2, opt2, sched2, ck2 = _setup(tmp_path, seed=1)
    extra = ck2.load(str(tmp_path))  # a directory -> its last checkpoint
    assert extra["iteration"] == 6 and extra["note"] == "hello"
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.last_iter == 6 and opt2.param_groups[0]["lr"] == pytest.approx(0.01)
    m1 = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(m1, opt2.state_dict()["state"][0]["momentum_buffer"])


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched, ck = _setup(tmp_path)
    ck.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()
    _one_step(model, opt, sched)

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial zip bytes")  # half a file, then the "crash"
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        ck.save("model_0000002", iteration=2)
    monkeypatch.setattr(torch, "save", real_save)

    assert not (tmp_path / "model_0000002.pth").exists()
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert _last(tmp_path) == "model_0000001.pth"
    # no temp files left; the complete checkpoint keeps its checksum
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth", "model_0000001.pth.sha256"]
    _, _, _, ck2 = _setup(tmp_path, seed=3)
    assert ck2.resume_or_load("", resume=True)["iteration"] == 1


def test_corrupt_file_error_names_it(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    path = ck.save("model_0000003", iteration=3)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="model_0000003.pth.*truncated or corrupted"):
        load_checkpoint_file(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        ck.load(str(garbage))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ck.load(str(tmp_path / "nope.pth"))


def test_resume_falls_back_to_previous_complete_checkpoint(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    _one_step(model, opt, sched)
    ck.save("model_0000001", iteration=1)
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    _one_step(model, opt, sched)
    path2 = ck.save("model_0000002", iteration=2)
    with open(path2, "r+b") as f:
        f.truncate(100)
    model2, opt2, sched2, ck2 = _setup(tmp_path, seed=5)
    out = ck2.resume_or_load("", resume=True)
    assert out["iteration"] == 1 and out["path"].endswith("model_0000001.pth")
    assert sched2.last_iter == 1
    for k, v in model2.state_dict().items():
        assert torch.equal(v, w1[k])
    # every candidate broken: a clear error
    with open(tmp_path / "model_0000001.pth", "r+b") as f:
        f.truncate(10)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        _setup(tmp_path, seed=6)[3].resume_or_load("", resume=True)


def test_resume_or_load_without_checkpoint_loads_initial_weights_only(tmp_path):
    src_dir = tmp_path / "src"
    model, opt, sched, ck = _setup(src_dir)
    for _ in range(3):
        _one_step(model, opt, sched)
    weights = ck.save("model_final", iteration=3)
    model2, opt2, sched2, ck2 = _setup(tmp_path / "run", seed=9)
    assert ck2.resume_or_load(weights, resume=True) == {}
    assert sched2.last_iter == 0  # schedule and optimizer untouched
    for k, v in model2.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_shape_mismatch_names_key_and_shapes():
    model = nn.Sequential(nn.Linear(4, 3))
    bad = nn.Sequential(nn.Linear(4, 5)).state_dict()
    with pytest.raises(CheckpointError) as e:
        load_model_state(model, bad, source="detector.pth")
    msg = str(e.value)
    assert "0.weight: detector.pth has shape (5, 4), model has shape (3, 4)" in msg
    assert "0.bias: detector.pth has shape (5,), model has shape (3,)" in msg


def test_module_prefix_missing_unexpected_and_mapping():
    model = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
    src = nn.ModuleDict({"a": nn.Linear(2, 2), "c": nn.Linear(2, 2)})
    sd = {"module." + k: v for k, v in src.state_dict().items()}  # saved from DDP
    missing, unexpected = load_model_state(model, sd)
    assert torch.equal(model["a"].weight, src["a"].weight)
    assert sorted(missing) == ["b.bias", "b.weight"] and sorted(unexpected) == ["c.bias", "c.weight"]
    missing, _ = load_model_state(model, src.state_dict(), load_mapping={"a.": "b."})
    assert missing == [] and torch.equal(model["b"].weight, src["a"].weight)


def test_best_model_does_not_move_last_checkpoint(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    ck.save("model_0000004", iteration=4)
    ck.save_model("model_best", iteration=4, best_metric={"name": "R@100", "value": 0.31})
    assert _last(tmp_path) == "model_0000004.pth"
    best = load_checkpoint_file(str(tmp_path / "model_best.pth"))
    assert best["best_metric"]["value"] == pytest.approx(0.31) and "optimizer" not in best


def test_rng_state_roundtrip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    st = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(st)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_bare_state_dict_and_non_writing_rank(tmp_path):
    model = nn.Linear(2, 2)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    assert set(load_checkpoint_file(str(tmp_path / "plain.pth"))) == {"model"}
    # an old (SGB-style) file with pickled objects beyond tensors still loads
    torch.save({"model": model.state_dict(), "iteration": 3, "extra": Fraction(1, 3)}, tmp_path / "old.pth")
    assert load_checkpoint_file(str(tmp_path / "old.pth"))["extra"] == Fraction(1, 3)
    quiet = Checkpointer(model, str(tmp_path / "r1"), save_to_disk=False)
    assert quiet.save("model_0000001", iteration=1) is None
    assert not (tmp_path / "r1").exists()
