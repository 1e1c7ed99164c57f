"""SIGTERM stops a training command cleanly, with data-loader workers, alone or under torchrun.

Real processes and real signals: ``tools/relation_train_net.py`` (tiny two-stage PredCls on
SynthVG, CPU, one thread, DATALOADER.NUM_WORKERS 2, aspect-ratio grouping on) gets SIGTERM

* sent to its whole process group (what a shell's ``kill -- -PGID``, or a scheduler signalling
  every process of the job, does: the workers get it too);
* through torchrun (SIGTERM to torchrun, which forwards it to each rank's process group, workers
  included, and SIGKILLs them after its shutdown timeout).

Each time the run writes a checkpoint of the iteration it reached, ``last_checkpoint`` names it,
the test after training does not run, and the exit status is not 0 (143 = 128 + SIGTERM for the
command itself, :data:`sgg.cli.PREEMPTED_EXIT_STATUS`); the same command run again resumes from the
checkpoint and finishes.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import make_synthvg, subprocess_env, write_config_yaml  # noqa: E402

from sgg.cli import PREEMPTED_EXIT_STATUS, exit_status  # noqa: E402

MAX_ITER = 20
TERM_AT = 3  # SIGTERM once the log shows this iteration (far from MAX_ITER: the run cannot finish first)
ITER_LINE = re.compile(rf"iter: (\d+)/{MAX_ITER}\b")


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("sigterm")
    root = make_synthvg(d / "data", num_images=20)
    # the default loader: workers, aspect-ratio grouping
    return write_config_yaml(str(d / "tiny_predcls.yaml"), root, str(d / "unused_output"), "predcls",
                             "DATALOADER.NUM_WORKERS", "2", "DATALOADER.ASPECT_RATIO_GROUPING", "True")


def train_args(cfg_file, out_dir, tool="relation_train_net"):
    return [os.path.join(REPO, "tools", f"{tool}.py"), "--config-file", cfg_file,
            "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "1",
            "SOLVER.TO_VAL", "False", "OUTPUT_DIR", str(out_dir)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            f"--master_port={free_port()}"]


def run_until(cmd, out_dir, log_path, at_iter, timeout=120):
    """Start ``cmd`` in a new session (its own process group), wait until OUTPUT_DIR/log.txt shows
    iteration ``at_iter``; returns (process, open log file)."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=subprocess_env(REPO), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log_file = os.path.join(str(out_dir), "log.txt")
    deadline = time.time() + timeout
    try:
        while True:
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before iteration {at_iter}"
            assert time.time() < deadline, f"no iteration {at_iter} within {timeout} s"
            if os.path.isfile(log_file):
                with open(log_file) as f:
                    if max((int(m) for m in ITER_LINE.findall(f.read())), default=0) >= at_iter:
                        return proc, log
            time.sleep(0.02)
    except BaseException:
        kill_group(proc)
        log.close()
        raise


def descendants(pid):
    """Every process below ``pid`` (torchrun's ranks run in sessions of their own)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc):
    """Clean-up after a failure: SIGKILL the run, its process group and everything it started."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_exit(proc, log, timeout=90):
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_group(proc)
        log.close()
    with open(log.name) as f:
        return proc.returncode, f.read()


def assert_stopped_with_checkpoint(out_dir, at_least):
    """The SIGTERM checkpoint: named by last_checkpoint, of an iteration >= ``at_least``, no final
    model, no test results. Returns its iteration."""
    with open(os.path.join(str(out_dir), "last_checkpoint")) as f:
        name = f.read().strip()
    m = re.fullmatch(r"model_(\d{7})\.pth", name)
    assert m, name
    ckpt = torch.load(os.path.join(str(out_dir), name), map_location="cpu", weights_only=True)
    it = int(m.group(1))
    assert ckpt["iteration"] == it and at_least <= it < MAX_ITER
    assert not os.path.exists(os.path.join(str(out_dir), "model_final.pth"))
    assert not os.path.exists(os.path.join(str(out_dir), "inference")), "the test ran after a SIGTERM stop"
    with open(os.path.join(str(out_dir), "log.txt")) as f:
        assert f"stopped by SIGTERM after iteration {it}; checkpoint saved" in f.read()
    return it


# ------------------------------------------------------------------------------------------------
def test_exit_status_of_a_preempted_job():
    assert PREEMPTED_EXIT_STATUS == 143
    assert exit_status({"state": "preempted"}) == 143 and exit_status({"state": "preempted", "stage": 1}) == 143
    assert exit_status({"state": "completed", "test": {}}) == 0 and exit_status({"state": "stopped_early"}) == 0


def test_sigterm_to_process_group_with_workers_saves_exits_143_and_resumes(cfg_file, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, *train_args(cfg_file, out)]
    proc, log = run_until(cmd, out, tmp_path / "first.stdout", TERM_AT)
    os.killpg(proc.pid, signal.SIGTERM)  # main process and its data-loader workers alike
    rc, text = wait_exit(proc, log)
    assert rc == PREEMPTED_EXIT_STATUS, text[-4000:]
    assert "killed by signal" not in text, text[-4000:]
    it = assert_stopped_with_checkpoint(out, TERM_AT)

    # the same command again: resumes at the checkpoint and finishes (with the test after training)
    res = subprocess.run(cmd, env=subprocess_env(REPO), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    with open(out / "log.txt") as f:
        assert f"resuming from {out / f'model_{it:07d}.pth'} at iteration {it}" in f.read()
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == MAX_ITER
    assert os.path.isdir(out / "inference")


def test_sigterm_stops_the_detector_job_the_same_way(cfg_file, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, *train_args(cfg_file, out, "detector_train_net"), "MODEL.RELATION_ON", "False",
           "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "False"]
    proc, log = run_until(cmd, out, tmp_path / "detector.stdout", TERM_AT)
    os.killpg(proc.pid, signal.SIGTERM)
    rc, text = wait_exit(proc, log)
    assert rc == PREEMPTED_EXIT_STATUS, text[-4000:]
    assert "killed by signal" not in text, text[-4000:]
    assert_stopped_with_checkpoint(out, TERM_AT)


@pytest.mark.parametrize("nproc, target", [(1, "torchrun's process group"), (2, "torchrun")])
def test_sigterm_to_torchrun_with_workers_saves_on_every_rank_and_fails(cfg_file, tmp_path, nproc, target):
    out = tmp_path / "run"
    cmd = [*torchrun(nproc), *train_args(cfg_file, out)]
    if nproc > 1:  # validation every iteration: the ranks also agree on skipping it once a SIGTERM came
        cmd += ["SOLVER.TO_VAL", "True", "SOLVER.VAL_PERIOD", "1"]
    proc, log = run_until(cmd, out, tmp_path / "torchrun.stdout", TERM_AT)
    if target == "torchrun":
        os.kill(proc.pid, signal.SIGTERM)
    else:  # torchrun is the leader of its group; the ranks run in sessions of their own
        os.killpg(proc.pid, signal.SIGTERM)
    rc, text = wait_exit(proc, log)
    # torchrun re-raises the signal as SignalException (status 1) once its ranks have exited
    assert rc != 0, text[-4000:]
    # every rank stopped by itself within torchrun's grace period: no worker or rank killed
    assert "killed by signal" not in text and "forcefully exiting" not in text, text[-4000:]
    it = assert_stopped_with_checkpoint(out, TERM_AT)
    assert text.count(f"stopped by SIGTERM after iteration {it}; checkpoint saved") == nproc, text[-4000:]
    ckpt = torch.load(out / (out / "last_checkpoint").read_text().strip(), map_location="cpu", weights_only=True)
    assert len(ckpt["rng_states"]) == nproc  # written collectively: every rank reached the save
