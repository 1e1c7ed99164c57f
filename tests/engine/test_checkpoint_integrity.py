"""What a kill or a bad disk leaves behind: stale temporary files of interrupted atomic writes are
removed (only those of writers that are gone), and checkpoints carry a SHA-256 that loading
verifies, so flipped bytes inside tensor data (which ``torch.load`` reads without complaint) are
reported, and resuming falls back past them."""
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from sgg.checkpoint import CheckpointError, Checkpointer, CorruptCheckpointError, load_checkpoint_file, read_state_dict
from sgg.checkpoint.checkpointer import ChecksumMismatchError
from sgg.utils import io as sgg_io
from sgg.utils.io import clean_stale_temp_files, temp_file_prefix

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))


def _checkpointer(tmp_path, seed=0, **kw):
    model = _model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, Checkpointer(model, str(tmp_path), optimizer=opt, save_to_disk=True, **kw)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _removed(caplog):
    return [r.getMessage() for r in caplog.records if "removed the stale temporary file" in r.getMessage()]


# ------------------------------------------------------------------------------------ temp files
def test_stale_temp_files_removed_live_ones_kept(tmp_path, caplog):
    target = str(tmp_path / "model_0000009.pth")
    own = temp_file_prefix(target)  # .model_0000009.pth.<pid>-<start>@<host>.
    pid, start = os.getpid(), int(own.rsplit("@", 1)[0].rsplit("-", 1)[1])
    host = own.rsplit("@", 1)[1].rstrip(".")
    assert own == f".model_0000009.pth.{pid}-{start}@{host}."
    files = {
        "mine": own + "a1b2c3d4.tmp",  # a write of this (live) process: kept
        "dead": f".model_0000009.pth.{_dead_pid()}-{start}@{host}.e5f6g7h8.tmp",
        "dead_stats": f".vg_train_statistics.npz.{_dead_pid()}-1@{host}.zzzz9999.tmp",  # any atomic_write user
        "remote_young": ".model_0000009.pth.77-5@some-other-node.q1w2e3r4.tmp",
        "remote_old": ".model_0000006.pth.77-5@some-other-node.t5y6u7i8.tmp",
        "legacy_young": ".last_checkpoint.ab12cd34.tmp",
        "legacy_old": ".model_0000003.pth.ef56gh78.tmp",
        "unrelated": ".model_0000009.pth.k1ll3d.tmp",  # not our pattern: never touched
    }
    if start:  # Linux: this pid with another start time = an earlier process whose pid we got
        files["reused_pid"] = f".model_0000009.pth.{pid}-{start + 1}@{host}.u8i9o0p1.tmp"
    for key, name in files.items():
        (tmp_path / name).write_bytes(b"" if key.startswith("dead") else b"PK\x03\x04 partial")
    old = time.time() - 2 * 3600
    for key in ("remote_old", "legacy_old"):
        os.utime(tmp_path / files[key], (old, old))
    (tmp_path / "model_0000006.pth").write_bytes(b"x")  # regular files are never candidates

    # a Checkpointer that does not write (another rank) leaves the directory alone
    Checkpointer(_model(), str(tmp_path), save_to_disk=False).resume_or_load("", resume=True)
    assert all((tmp_path / n).exists() for n in files.values())

    _, ck = _checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sgg"):
        assert ck.resume_or_load("", resume=True) == {}  # the start of a run cleans its OUTPUT_DIR
    stale = {"dead", "dead_stats", "remote_old", "legacy_old", "reused_pid"} & set(files)
    for key, name in files.items():
        assert (tmp_path / name).exists() == (key not in stale), key
    logs = _removed(caplog)
    assert len(logs) == len(stale)
    for key in stale:
        assert any(files[key] in line for line in logs), key
    assert any("is no longer running" in line for line in logs)
    assert (tmp_path / "model_0000006.pth").exists()
    assert clean_stale_temp_files(str(tmp_path / "no_such_dir")) == []


def test_sigkill_during_write_leaves_a_temp_file_that_resume_removes(tmp_path, caplog):
    """A real process killed inside atomic_write: while it lives its temp file is kept, after the
    kill the next run's Checkpointer removes it."""
    writer = (
        "import sys, time\n"
        "from sgg.utils.io import atomic_write\n"
        "def write(f):\n"
        "    f.write(b'PK\\x03\\x04' + bytes(1 << 20))\n"
        "    f.flush()\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "model_0000012.pth")],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(temps) == 1 and temps[0].startswith(f".model_0000012.pth.{proc.pid}-")
        assert clean_stale_temp_files(str(tmp_path)) == []  # its writer is alive
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert (tmp_path / temps[0]).stat().st_size == (1 << 20) + 4  # left behind by the kill
    _, ck = _checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sgg"):
        ck.resume_or_load("", resume=True)
    assert not (tmp_path / temps[0]).exists() and not (tmp_path / "model_0000012.pth").exists()
    assert any(temps[0] in line and f"process {proc.pid}" in line for line in _removed(caplog))


def test_save_cleans_before_writing(tmp_path):
    _, ck = _checkpointer(tmp_path)
    host = temp_file_prefix("x").rsplit("@", 1)[1].rstrip(".")
    stale = tmp_path / f".model_0000001.pth.{_dead_pid()}-0@{host}.abcdefgh.tmp"
    stale.write_bytes(b"")
    ck.save("model_0000002", iteration=2)
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth", "model_0000002.pth.sha256"]


# ------------------------------------------------------------------------------------ checksums
def _flip_tensor_bytes(path, tensor):
    """Flip 16 bytes in the middle of ``tensor``'s stored data (not the zip structure)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at > 0, "tensor bytes not found in the file"
    mid = at + len(raw) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    with open(path, "wb") as f:
        f.write(data)


def test_checksum_sidecar_and_flipped_bytes_raise(tmp_path):
    model, ck = _checkpointer(tmp_path)
    path = ck.save("model_0000001", iteration=1)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(path + ".sha256") as f:
        assert f.read() == f"{digest}  model_0000001.pth\n"  # `sha256sum -c` format
    assert load_checkpoint_file(path)["iteration"] == 1  # verified, loads

    weight = model[0].weight
    _flip_tensor_bytes(path, weight)
    # torch.load alone does not notice: the flipped values load silently
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert not torch.equal(raw["model"]["0.weight"], weight.detach())
    with open(path, "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()

    def check(exc):
        msg = str(exc.value)
        for part in (path, f"expected sha256 {digest}", f"actual sha256 {actual}", "corrupt",
                     "delete it and resume from the previous checkpoint, or re-copy it"):
            assert part in msg, (part, msg)

    with pytest.raises(ChecksumMismatchError) as e:
        load_checkpoint_file(path)
    check(e)
    assert isinstance(e.value, CorruptCheckpointError) and (e.value.expected, e.value.actual) == (digest, actual)
    with pytest.raises(ChecksumMismatchError) as e:  # MODEL.WEIGHT / Checkpointer.load
        _checkpointer(tmp_path / "other", seed=1)[1].load(path, model_only=True)
    check(e)
    with pytest.raises(ChecksumMismatchError) as e:  # MODEL.PRETRAINED_DETECTOR_CKPT, backbone weights
        read_state_dict(path, "MODEL.PRETRAINED_DETECTOR_CKPT")
    check(e)
    from sgg.config import get_default_config
    from sgg.engine.loading import load_trained_model

    with pytest.raises(ChecksumMismatchError) as e:  # the test job, predict, export (before any build)
        load_trained_model(get_default_config(), str(tmp_path), device="cpu")
    check(e)


def test_resume_falls_back_past_a_checksum_mismatch(tmp_path, caplog):
    model, ck = _checkpointer(tmp_path)
    ck.save("model_0000001", iteration=1)
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    path2 = ck.save("model_0000002", iteration=2)
    _flip_tensor_bytes(path2, model[0].weight)
    torch.load(path2, weights_only=True)  # still a readable file: only the checksum tells

    model2, ck2 = _checkpointer(tmp_path, seed=5)
    with caplog.at_level(logging.INFO, logger="sgg"):
        out = ck2.resume_or_load("", resume=True)
    assert out["iteration"] == 1 and out["path"].endswith("model_0000001.pth")
    for k, v in model2.state_dict().items():
        assert torch.equal(v, w1[k])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"cannot resume from {path2}: checksum mismatch" in text
    assert f"resumed from the previous complete checkpoint {tmp_path / 'model_0000001.pth'} instead" in text


def test_files_without_checksum_load_with_a_note(tmp_path, caplog):
    model = _model()
    plain = tmp_path / "external.pth"
    torch.save({"model": model.state_dict()}, plain)  # e.g. SGB's, downloaded or copied files
    with caplog.at_level(logging.INFO, logger="sgg"):
        assert set(load_checkpoint_file(str(plain))) == {"model"}
    assert any("has no checksum file" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    model2, ck = _checkpointer(tmp_path / "run", seed=3)
    ck.resume_or_load(str(plain), resume=True)  # MODEL.WEIGHT without a checksum
    assert torch.equal(model2[0].weight, model[0].weight)
    # without a checksum, a truncated file is still reported by the reader
    with open(plain, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptCheckpointError, match="external.pth.*truncated or corrupted"):
        load_checkpoint_file(str(plain))
    # a sidecar that holds no digest: a warning, the file loads unverified
    ok = tmp_path / "ok.pth"
    torch.save({"model": model.state_dict()}, ok)
    (tmp_path / "ok.pth.sha256").write_text("garbage\n")
    with caplog.at_level(logging.WARNING, logger="sgg"):
        assert "model" in load_checkpoint_file(str(ok))
    assert any("holds no SHA-256 digest" in r.getMessage() for r in caplog.records)


def test_overwrite_never_leaves_an_old_checksum_beside_a_new_file(tmp_path, monkeypatch):
    """model_best.pth is rewritten in place: a kill after the new file is renamed but before its new
    checksum is written must not leave the old digest (a false 'corrupt' on the next load)."""
    model, ck = _checkpointer(tmp_path)
    ck.save_model("model_best", iteration=1)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    real = sgg_io.atomic_write_text

    def dies_before_the_checksum(path, text):
        if path.endswith(".sha256"):
            raise KeyboardInterrupt("killed (simulated)")
        real(path, text)

    monkeypatch.setattr(sgg_io, "atomic_write_text", dies_before_the_checksum)
    with pytest.raises(KeyboardInterrupt):
        ck.save_model("model_best", iteration=2)
    monkeypatch.setattr(sgg_io, "atomic_write_text", real)
    assert not (tmp_path / "model_best.pth.sha256").exists()
    best = load_checkpoint_file(str(tmp_path / "model_best.pth"))  # the new, complete file, unverified
    assert best["iteration"] == 2 and torch.equal(best["model"]["0.weight"], model[0].weight.detach())
    ck.save_model("model_best", iteration=3)
    assert load_checkpoint_file(str(tmp_path / "model_best.pth"))["iteration"] == 3


def test_truncated_checkpoint_with_checksum_is_a_checkpoint_error(tmp_path):
    _, ck = _checkpointer(tmp_path)
    path = ck.save("model_0000004", iteration=4)
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointError, match="model_0000004.pth.*truncated or corrupted"):
        load_checkpoint_file(path)


def test_file_replaced_while_read_is_read_again(tmp_path, monkeypatch):
    """An evaluation reads model_best.pth while training replaces it (file, then checksum): the old
    file opened with the new digest is no corruption; the new file is read."""
    from sgg.checkpoint import files as ckpt_mod  # where load_checkpoint_file reads the sidecar

    model, ck = _checkpointer(tmp_path)
    ck.save_model("model_best", iteration=1)
    real, calls = ckpt_mod.read_checksum, []

    def replaced_meanwhile(path):
        calls.append(path)
        if len(calls) == 1:  # the reader has opened the old file; the writer replaces both now
            ck.save_model("model_best", iteration=2)
        return real(path)

    monkeypatch.setattr(ckpt_mod, "read_checksum", replaced_meanwhile)
    assert load_checkpoint_file(str(tmp_path / "model_best.pth"))["iteration"] == 2
    assert len(calls) == 2
