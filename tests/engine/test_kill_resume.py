"""Kill -9 and re-run: tools/relation_train_net.py (tiny two-stage PredCls on SynthVG, CPU, one
thread) is SIGKILLed at a seeded iteration and the SAME command is run again; the final weights
are bitwise those of an uninterrupted run. A variant, on a copy of the killed run's OUTPUT_DIR,
corrupts the newest checkpoint (what a kill during a checkpoint write leaves on a filesystem
without atomic rename, or a bad disk) and leaves a partial temp file as a kill inside
``atomic_write`` does: the re-run resumes from the previous complete checkpoint, says so in the
log, and still ends on the uninterrupted run's weights.

The runs use the default loader: two data-loader workers, aspect-ratio grouping on, and a random
training size per sample (multi-scale ``INPUT.MIN_SIZE_TRAIN``).

What makes this exact (tests/engine/test_trainer.py::test_resume_reproduces_uninterrupted_run pins
it for the trainer alone, tests/data/test_train_batches.py for the loader, grouped or not):
checkpoints hold model, optimizer, schedule and every RNG state, the train loader is rebuilt
positioned at the resumed iteration (the grouped batch stream is replayed on indices and its first
``k`` batches skipped), every sample's random draws are seeded from its stream position (not from
the worker's RNG), and ``sgg.checkpoint`` falls back to the newest readable ``model_*.pth`` when
the tagged one is unreadable.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import make_synthvg, subprocess_env, write_config_yaml  # noqa: E402

MAX_ITER = 12
PERIOD = 3
ITER_LINE = re.compile(rf"iter: (\d+)/{MAX_ITER}\b")
SEED = 20240611  # the kill moments are random, but the same on every run of the suite


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill_resume")
    root = make_synthvg(d / "data", num_images=20)
    # the default loader: data-loader workers and aspect-ratio grouping; several training sizes, so
    # every sample has a random draw (made in whichever worker loads it)
    return write_config_yaml(str(d / "tiny_predcls.yaml"), root, str(d / "unused_output"), "predcls",
                             "DATALOADER.NUM_WORKERS", "2", "DATALOADER.ASPECT_RATIO_GROUPING", "True",
                             "INPUT.MIN_SIZE_TRAIN", "(48, 56, 64)")


def train_cmd(cfg_file, out_dir):
    """The one command every run uses (only OUTPUT_DIR differs between the compared runs)."""
    return [sys.executable, os.path.join(REPO, "tools", "relation_train_net.py"), "--config-file", cfg_file,
            "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "SOLVER.LOG_PERIOD", "1",
            "SOLVER.TO_VAL", "False", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out_dir)]


def start(cmd, tmp_dir, tag):
    log = open(os.path.join(str(tmp_dir), f"{tag}.stdout"), "w")
    return subprocess.Popen(cmd, env=subprocess_env(REPO), stdout=log, stderr=subprocess.STDOUT), log


def finish(proc, log, timeout=240):
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    with open(log.name) as f:
        out = f.read()
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def uninterrupted(cfg_file, tmp_path_factory):
    """Final weights of the run nobody kills. Started in the background at once, so that it runs
    beside the killed runs; ``result()`` waits for it."""
    out = tmp_path_factory.mktemp("uninterrupted")
    proc, log = start(train_cmd(cfg_file, out / "run"), out, "straight")

    class Reference:
        weights = None

        def result(self):
            if self.weights is None:
                finish(proc, log)
                final = torch.load(out / "run" / "model_final.pth", map_location="cpu", weights_only=True)
                assert final["iteration"] == MAX_ITER
                self.weights = final["model"]
            return self.weights

    ref = Reference()
    yield ref
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def run_and_kill(cmd, out_dir, at_iter, tmp_dir, tag, timeout=180):
    """Start ``cmd``, SIGKILL it once its log shows iteration ``at_iter`` (polling log.txt, which
    the logger flushes per line); returns the last iteration the log showed."""
    proc, log = start(cmd, tmp_dir, tag)
    log_file = os.path.join(str(out_dir), "log.txt")
    seen = 0
    try:
        deadline = time.time() + timeout
        while seen < at_iter:
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before iteration {at_iter}"
            assert time.time() < deadline, f"no iteration {at_iter} within {timeout} s"
            if os.path.isfile(log_file):
                with open(log_file) as f:
                    its = [int(m) for m in ITER_LINE.findall(f.read())]
                seen = max(its, default=0)
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL, "the run was not killed: it finished too early"
    assert not os.path.exists(os.path.join(str(out_dir), "model_final.pth"))
    return seen


def newest_checkpoint(out_dir):
    with open(os.path.join(str(out_dir), "last_checkpoint")) as f:
        name = f.read().strip()
    m = re.fullmatch(r"model_(\d{7})\.pth", name)
    assert m, name
    return os.path.join(str(out_dir), name), int(m.group(1))


def assert_same_weights(out_dir, reference):
    final = torch.load(os.path.join(str(out_dir), "model_final.pth"), map_location="cpu", weights_only=True)
    assert final["iteration"] == MAX_ITER
    assert set(final["model"]) == set(reference)
    for k, v in reference.items():
        assert torch.equal(final["model"][k], v), k


@pytest.fixture(scope="module")
def killed(cfg_file, tmp_path_factory):
    """One run SIGKILLed at a seeded iteration after its second checkpoint, and a copy of its
    OUTPUT_DIR taken right after the kill (one killed process serves both tests)."""
    import shutil

    d = tmp_path_factory.mktemp("killed")
    at = random.Random(SEED).randint(2 * PERIOD + 1, MAX_ITER - 2)
    out = d / "run"
    seen = run_and_kill(train_cmd(cfg_file, out), out, at, d, "killed")
    copy = d / "copy" / "run"
    shutil.copytree(out, copy)
    return {"out": out, "copy": copy, "seen": seen, "dir": d}


# ------------------------------------------------------------------------------------------------
def test_sigkill_then_same_command_equals_uninterrupted_run(cfg_file, uninterrupted, killed, tmp_path):
    out, seen = killed["out"], killed["seen"]
    ckpt, it = newest_checkpoint(out)
    # the newest complete checkpoint at the kill (the run may have got a little further than the log)
    assert it % PERIOD == 0 and seen - seen % PERIOD <= it < MAX_ITER

    finish(*start(train_cmd(cfg_file, out), tmp_path, "resumed"))  # the same command again
    with open(out / "log.txt") as f:
        log = f.read()
    assert f"resuming from {ckpt} at iteration {it}" in log
    assert "cannot resume" not in log
    assert_same_weights(out, uninterrupted.result())


def test_corrupt_newest_checkpoint_falls_back_to_previous_one(cfg_file, uninterrupted, killed, tmp_path):
    out = killed["copy"]  # the killed run's OUTPUT_DIR as it was at the kill
    newest, it = newest_checkpoint(out)
    previous = os.path.join(str(out), f"model_{it - PERIOD:07d}.pth")
    assert os.path.isfile(previous)
    # the newest checkpoint, named in last_checkpoint, cut in half; a partial temp file beside it
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    # named as atomic_write names its temp files, by a writer process that has ended
    from sgg.utils.io import temp_file_prefix

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    own = temp_file_prefix(f"model_{it + PERIOD:07d}.pth")
    partial = os.path.join(str(out), own.replace(f".{os.getpid()}-", f".{dead.pid}-", 1) + "k1ll3d0.tmp")
    with open(partial, "wb") as f:
        f.write(data[:1000])

    finish(*start(train_cmd(cfg_file, out), tmp_path, "resumed"))  # the command, with the copy's OUTPUT_DIR
    with open(out / "log.txt") as f:
        log = f.read()
    assert f"cannot resume from {newest}" in log and "truncated or corrupted" in log
    assert f"resumed from the previous complete checkpoint {previous} instead" in log
    assert f"resuming from {previous} at iteration {it - PERIOD}" in log
    assert not os.path.exists(partial) and "removed the stale temporary file" in log
    assert_same_weights(out, uninterrupted.result())
