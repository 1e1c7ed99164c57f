"""The trainer: resume = uninterrupted run, non-finite loss, AMP, validation / plateau / best model,
SIGTERM, 2-process DDP = 1 process, samplers, setup()."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sgg.checkpoint import load_checkpoint_file
from sgg.config import load_config
from sgg.data.samplers import InferenceSampler, TrainingSampler
from sgg.engine import (
    HookBase,
    LRScheduler,
    PeriodicCheckpointer,
    Trainer,
    default_argument_parser,
    seed_all,
    setup,
)
from sgg.solver import WarmupMultiStepLR

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GLOBAL_BATCH = 4


class TinyModel(nn.Module):
    """Linear layers + dropout; training returns loss terms and one logged-only scalar."""

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.backbone = nn.Linear(8, 16)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(16, 1)

    def forward(self, batch):
        x, y = batch["x"], batch["y"]
        pred = self.head(self.drop(torch.relu(self.backbone(x)))).squeeze(-1)
        self.last_dtype = pred.dtype
        return {"loss_mse": F.mse_loss(pred.float(), y), "loss_l1": 0.1 * (pred.float() - y).abs().mean(),
                "pred_mean": pred.detach().float().mean()}


def make_dataset(n: int = 24):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = x[:, 0] - 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g)
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def loader_factory(dataset, seed: int, global_batch: int, rank=None, world=None):
    """fn(start_iter) -> DataLoader positioned at start_iter (what the lead's build does)."""
    def build(start_iter: int):
        sampler = TrainingSampler(len(dataset), seed=seed, start=start_iter * global_batch, rank=rank,
                                  world_size=world)
        per_rank = global_batch // (world or 1)
        return DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=0)
    return build


def tiny_cfg(out_dir, *opts):
    return load_config(opts=[
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out_dir), "SEED", "7",
        "SOLVER.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "5", "SOLVER.IMS_PER_BATCH", str(GLOBAL_BATCH),
        "SOLVER.BASE_LR", "0.05", "SOLVER.SCALE_LR_BY_BATCH", "False", "SOLVER.SCHEDULE.TYPE", "WarmupMultiStepLR",
        "SOLVER.STEPS", "(6,)", "SOLVER.WARMUP_ITERS", "3", "SOLVER.WARMUP_FACTOR", "0.1",
        "SOLVER.GRAD_NORM_CLIP", "5.0", "SOLVER.LOG_PERIOD", "1", "SOLVER.TENSORBOARD", "False",
        "SOLVER.TO_VAL", "False", *opts])


def build_tiny_trainer(cfg, init_seed: int, evaluate_fn=None, hooks=None):
    seed_all(init_seed)
    model = TinyModel()
    ds = make_dataset()
    return Trainer.from_config(cfg, model, loader_factory(ds, cfg.SEED, cfg.SOLVER.IMS_PER_BATCH),
                               evaluate_fn=evaluate_fn, hooks=hooks)


class _PreemptAt(HookBase):
    """Simulates a SIGTERM arriving during iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter + 1 == self.at:
            self.trainer._on_sigterm(signal.SIGTERM, None)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    opts = ("SOLVER.EMA_DECAY", "0.9")
    straight = build_tiny_trainer(tiny_cfg(tmp_path / "a", *opts), init_seed=0)
    assert straight.resume_or_load("", resume=True) == 0
    assert straight.train() == "completed"

    first = build_tiny_trainer(tiny_cfg(tmp_path / "b", *opts), init_seed=0)
    first.resume_or_load("", resume=True)
    first.register_hooks([_PreemptAt(5)])
    assert first.train() == "preempted" and first.iter == 5
    assert (tmp_path / "b" / "last_checkpoint").read_text().strip() == "model_0000005.pth"
    assert not (tmp_path / "b" / "model_final.pth").exists()

    # a fresh process would seed differently before building; the checkpoint's RNG state wins
    second = build_tiny_trainer(tiny_cfg(tmp_path / "b", *opts), init_seed=123)
    assert second.resume_or_load("", resume=True) == 5
    assert second.train() == "completed" and second.iter == 10

    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    for k, v in straight.ema.model.state_dict().items():
        assert torch.equal(v, second.ema.model.state_dict()[k]), k
    assert straight.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]

    final = load_checkpoint_file(str(tmp_path / "a" / "model_final.pth"))
    assert final["iteration"] == 10 and "config" in final and "ema" in final
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.json")]
    assert [r["iteration"] for r in rows] == list(range(1, 11))
    assert {"total_loss", "loss_mse", "loss_l1", "pred_mean", "lr", "time", "data_time", "eta_seconds",
            "grad_norm"} <= set(rows[0])
    # linear warm-up 0.1 -> 1 over 3 iterations, then x0.1 from t = 6 (BASE_LR 0.05, no batch scaling)
    expected = [0.05 * f for f in (0.1, 0.4, 0.7, 1, 1, 1, 0.1, 0.1, 0.1, 0.1)]
    assert [r["lr"] for r in rows] == pytest.approx(expected)


def test_sigterm_defers_a_due_validation_to_the_resumed_run(tmp_path):
    """A SIGTERM in an iteration that validates: no validation before the checkpoint (it could outlast
    torchrun's grace period); the resumed run validates that iteration first, so schedule, best model
    and weights end as in an uninterrupted run. A SIGTERM in the last iteration writes model_final."""
    def make_eval(log):
        def evaluate(model):  # a function of the weights: the same result when run later
            value = float(model.head.weight.detach().abs().sum())
            log.append(value)
            return {"R@100": value}
        return evaluate

    opts = ("SOLVER.SCHEDULE.TYPE", "WarmupReduceLROnPlateau", "SOLVER.WARMUP_ITERS", "0", "SOLVER.TO_VAL", "True",
            "SOLVER.VAL_PERIOD", "2", "SOLVER.SCHEDULE.PATIENCE", "0", "SOLVER.SCHEDULE.FACTOR", "0.5",
            "SOLVER.SCHEDULE.MAX_DECAY_STEP", "100", "SOLVER.CHECKPOINT_PERIOD", "0")
    seen_straight, seen_first, seen_second = [], [], []
    straight = build_tiny_trainer(tiny_cfg(tmp_path / "a", *opts), 0, evaluate_fn=make_eval(seen_straight))
    assert straight.train() == "completed"
    assert len(seen_straight) == 5  # iterations 2, 4, 6, 8, 10
    assert straight.optimizer.param_groups[0]["lr"] < 0.05  # the plateau schedule acted on the reports

    first = build_tiny_trainer(tiny_cfg(tmp_path / "b", *opts), 0, evaluate_fn=make_eval(seen_first))
    first.register_hooks([_PreemptAt(4)])
    assert first.train() == "preempted" and first.iter == 4
    assert seen_first == seen_straight[:1]  # iteration 4's validation did not run
    ckpt = load_checkpoint_file(str(tmp_path / "b" / "model_0000004.pth"))
    assert ckpt["hooks"]["EvalHook"]["pending"] == 4

    second = build_tiny_trainer(tiny_cfg(tmp_path / "b", *opts), 1, evaluate_fn=make_eval(seen_second))
    assert second.resume_or_load("", resume=True) == 4
    assert second.train() == "completed"
    assert seen_second == seen_straight[1:]  # 4 (deferred, run first), 6, 8, 10
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    assert straight.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]
    assert (load_checkpoint_file(str(tmp_path / "a" / "model_best.pth"))["best_metric"]
            == load_checkpoint_file(str(tmp_path / "b" / "model_best.pth"))["best_metric"])

    # SIGTERM in the last iteration: training is done, its checkpoint is model_final
    last = build_tiny_trainer(tiny_cfg(tmp_path / "c", *opts), 0, evaluate_fn=make_eval([]))
    last.register_hooks([_PreemptAt(10)])
    assert last.train() == "preempted" and last.iter == 10
    assert (tmp_path / "c" / "last_checkpoint").read_text().strip() == "model_final.pth"
    seen_again = []
    again = build_tiny_trainer(tiny_cfg(tmp_path / "c", *opts), 1, evaluate_fn=make_eval(seen_again))
    assert again.resume_or_load("", resume=True) == 10
    assert again.train() == "completed" and seen_again == seen_straight[-1:]


class _NaNAt(TinyModel):
    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, batch):
        self.calls += 1
        out = super().forward(batch)
        if self.calls == self.at:
            out["loss_l1"] = out["loss_l1"] * float("nan")
        return out


def test_non_finite_loss_stops_naming_iteration_and_terms(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.CHECKPOINT_PERIOD", "2")
    seed_all(0)
    model = _NaNAt(at=4)
    trainer = Trainer.from_config(cfg, model, loader_factory(make_dataset(), 7, GLOBAL_BATCH))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    msg = str(e.value)
    assert "iteration 4" in msg and "loss_l1=nan" in msg and "loss_mse=" in msg and "pred_mean=" in msg
    assert trainer.state == "failed"
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".pth")) == ["model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000002.pth"
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())  # it did train


def test_bfloat16_autocast_on_cpu_and_float16_fallback(tmp_path):
    trainer = build_tiny_trainer(tiny_cfg(tmp_path / "bf", "DTYPE", "bfloat16", "SOLVER.MAX_ITER", "3"), 0)
    assert trainer.train() == "completed"
    assert trainer.model.last_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.model.parameters())
    fp16 = build_tiny_trainer(tiny_cfg(tmp_path / "fp", "DTYPE", "float16", "SOLVER.MAX_ITER", "2"), 0)
    assert fp16.amp_dtype is None and not fp16.scaler.is_enabled()  # no GradScaler on CPU: float32
    fp16.train()
    assert fp16.model.last_dtype == torch.float32


def test_grad_clipping_bounds_the_update(tmp_path):
    seed_all(0)
    model = TinyModel(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, loader_factory(make_dataset(), 0, GLOBAL_BATCH), opt, max_iter=1, grad_clip=0.01,
                      output_dir=str(tmp_path))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() <= 0.01 + 1e-6
    assert trainer.storage.latest["grad_norm"] > 0.01  # it was clipped


def test_validation_drives_plateau_stop_and_best_model(tmp_path):
    values = iter([0.30, 0.50, 0.40, 0.40, 0.40, 0.40])
    seen = []

    def evaluate(model):
        seen.append(model)
        assert not model.training and not torch.is_grad_enabled()
        return {"predcls": {"R@50": 0.1, "R@100": next(values)}}

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_ITER", "100", "SOLVER.SCHEDULE.TYPE", "WarmupReduceLROnPlateau",
                   "SOLVER.WARMUP_ITERS", "0", "SOLVER.TO_VAL", "True", "SOLVER.VAL_PERIOD", "2",
                   "SOLVER.SCHEDULE.PATIENCE", "1", "SOLVER.SCHEDULE.COOLDOWN", "0", "SOLVER.SCHEDULE.FACTOR",
                   "0.1", "SOLVER.SCHEDULE.MAX_DECAY_STEP", "2", "SOLVER.EMA_DECAY", "0.5",
                   "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "3", "SOLVER.TENSORBOARD", "True")
    trainer = build_tiny_trainer(cfg, 0, evaluate_fn=evaluate)
    # validations at 2 (0.30 best), 4 (0.50 best), 6 (0.40 bad: decay 1), 8 (0.40 bad: decay 2 -> stop)
    assert trainer.train() == "stopped_early"
    assert trainer.iter == 8 and len(seen) == 4
    assert all(m is trainer.ema.model for m in seen)  # validation uses the EMA weights
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.01)
    best = load_checkpoint_file(str(tmp_path / "model_best.pth"))
    assert best["best_metric"] == {"name": "R@100", "value": 0.5, "iteration": 4}
    assert load_checkpoint_file(str(tmp_path / "model_final.pth"))["iteration"] == 8
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    val_rows = [r for r in rows if "val/predcls/R@100" in r]
    assert [r["iteration"] for r in val_rows] == [2, 4, 6, 8]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
    # resuming a run that already stopped does nothing more
    again = build_tiny_trainer(cfg, 1, evaluate_fn=evaluate)
    assert again.resume_or_load("", resume=True) == 8
    assert again.train() == "stopped_early" and again.iter == 8
    assert again.hooks[1].best_value == 0.5  # EvalHook state came back from the checkpoint


def test_unknown_val_metric_lists_available_keys(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.TO_VAL", "True", "SOLVER.VAL_PERIOD", "1", "SOLVER.VAL_METRIC", "mR@100")
    trainer = build_tiny_trainer(cfg, 0, evaluate_fn=lambda m: {"R@100": 0.2})
    with pytest.raises(KeyError, match="mR@100.*available: R@100"):
        trainer.train()


def test_model_must_return_loss_terms(tmp_path):
    class NoLoss(TinyModel):
        def forward(self, batch):
            return {"pred_mean": super().forward(batch)["pred_mean"]}

    seed_all(0)
    trainer = Trainer(NoLoss(), loader_factory(make_dataset(), 0, GLOBAL_BATCH),
                      torch.optim.SGD(TinyModel().parameters(), lr=0.1), max_iter=1)
    with pytest.raises(ValueError, match="no 'loss\\*' entries"):
        trainer.train()


def test_validation_does_not_change_the_training_trajectory(tmp_path):
    def noisy_eval(model):
        torch.rand(100)  # validation that draws random numbers (e.g. a shuffled loader)
        return {"R@100": 0.1}

    plain = build_tiny_trainer(tiny_cfg(tmp_path / "plain"), 0)
    plain.train()
    validated = build_tiny_trainer(tiny_cfg(tmp_path / "val", "SOLVER.TO_VAL", "True", "SOLVER.VAL_PERIOD", "3"),
                                   0, evaluate_fn=noisy_eval)
    validated.train()
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, validated.model.state_dict()[k]), k


def test_extra_loss_terms_are_added_and_logged(tmp_path):
    def anchor(model, batch, outputs):
        assert "loss_mse" in outputs and "x" in batch
        return {"loss_anchor": 0.01 * sum(p.pow(2).sum() for p in model.parameters())}

    seed_all(0)
    model = TinyModel(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, loader_factory(make_dataset(), 0, GLOBAL_BATCH), opt, max_iter=2, extra_losses=[anchor])
    trainer.train()
    latest = trainer.storage.latest
    assert latest["loss_anchor"] > 0
    assert latest["total_loss"] == pytest.approx(latest["loss_mse"] + latest["loss_l1"] + latest["loss_anchor"],
                                                 rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Samplers
def test_training_sampler_is_rank_split_resumable_and_seeded():
    def take(s, n):
        it = iter(s)
        return [next(it) for _ in range(n)]

    one = take(TrainingSampler(10, seed=3, rank=0, world_size=1), 35)
    assert sorted(one[:10]) == list(range(10)) and sorted(one[10:20]) == list(range(10))
    assert one[:10] != one[10:20]  # each epoch reshuffled
    assert take(TrainingSampler(10, seed=3, rank=0, world_size=1), 35) == one
    assert take(TrainingSampler(10, seed=4, rank=0, world_size=1), 10) != one[:10]
    assert take(TrainingSampler(10, seed=3, start=13, rank=0, world_size=1), 22) == one[13:]
    r0 = take(TrainingSampler(10, seed=3, start=4, rank=0, world_size=2), 8)
    r1 = take(TrainingSampler(10, seed=3, start=4, rank=1, world_size=2), 8)
    assert r0 == one[4:20:2] and r1 == one[5:20:2]


def test_inference_sampler_shards_every_image_once():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(InferenceSampler(2, rank=r, world_size=3)) for r in range(3)] == [1, 1, 0]
    assert list(InferenceSampler(5)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# Launch / setup
def test_argument_parser_and_setup(tmp_path):
    args = default_argument_parser().parse_args(
        ["--local_rank", "3", "--no-resume", "MODEL.DEVICE", "cuda", "OUTPUT_DIR", str(tmp_path / "run"),
         "SEED", "11", "SOLVER.IMS_PER_BATCH", "6"])
    assert args.resume is False and args.local_rank == 3 and args.opts[:2] == ["MODEL.DEVICE", "cuda"]
    log = logging.getLogger("sgg")
    saved = (list(log.handlers), log.propagate, log.level)
    try:
        cfg = setup(args)
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        for h in saved[0]:
            log.addHandler(h)
        log.propagate, log.level = saved[1], saved[2]
    assert cfg.is_frozen() and cfg.SOLVER.IMS_PER_BATCH == 6
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    written = load_config(str(tmp_path / "run" / "config.yaml"))
    assert written.SEED == 11 and written.SOLVER.IMS_PER_BATCH == 6
    assert torch.initial_seed() == 11  # SEED + rank 0
    assert "seeded" in (tmp_path / "run" / "log.txt").read_text()


# ---------------------------------------------------------------------------------------------
# Subprocess runs: SIGTERM and 2-process DDP
def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, HERE, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time
    from test_trainer import tiny_cfg, build_tiny_trainer
    from sgg.engine import HookBase

    class Mark(HookBase):
        def after_step(self):
            if self.trainer.iter == 1:
                open(sys.argv[2], "w").write("started")
            time.sleep(0.02)

    cfg = tiny_cfg(sys.argv[1], "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "0",
                   "SOLVER.LOG_PERIOD", "1000")
    trainer = build_tiny_trainer(cfg, 0)
    trainer.register_hooks([Mark()])
    state = trainer.train()
    print("STATE", state, trainer.iter)
""")


def test_sigterm_saves_checkpoint_and_exits_cleanly(tmp_path):
    script = tmp_path / "sigterm_run.py"
    script.write_text(SIGTERM_SCRIPT)
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out"), str(marker)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the library returns normally ("preempted"); the commands turn that into exit status 143
    # (tests/engine/test_sigterm_stop.py)
    assert proc.returncode == 0, out
    assert "STATE preempted" in out, out
    name = (tmp_path / "out" / "last_checkpoint").read_text().strip()
    ckpt = load_checkpoint_file(str(tmp_path / "out" / name))
    assert name == f"model_{ckpt['iteration']:07d}.pth" and 1 <= ckpt["iteration"] < 100000
    assert f"STATE preempted {ckpt['iteration']}" in out


DDP_SCRIPT = textwrap.dedent("""
    import sys
    from test_trainer import run_ddp_equivalence
    run_ddp_equivalence(sys.argv[1])
""")


def run_ddp_equivalence(out_dir: str) -> dict:
    """Tiny model (no dropout) for 6 iterations at global batch 8, any world size; rank 0 saves the
    final weights to out_dir/final_weights.pt."""
    from sgg.engine import init_distributed, shutdown_distributed
    from sgg.utils import comm

    init_distributed()
    rank, world = comm.get_rank(), comm.get_world_size()
    seed_all(0 + rank)  # different per rank on purpose: DDP broadcasts rank 0's initial weights
    model = TinyModel(dropout=0.0)
    if rank != 0:
        for p in model.parameters():
            torch.nn.init.normal_(p)
    global_batch = 8
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = WarmupMultiStepLR(opt, [4], gamma=0.1, warmup_factor=0.1, warmup_iters=2)
    loader = loader_factory(make_dataset(), 5, global_batch, rank=rank, world=world)
    trainer = Trainer(model, loader, opt, sched, max_iter=6, device="cpu", grad_clip=1.0,
                      find_unused_parameters=False, output_dir=out_dir)
    trainer.register_hooks([LRScheduler(), PeriodicCheckpointer(3)])
    trainer.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(state, os.path.join(out_dir, "final_weights.pt"))
    shutdown_distributed()
    return state


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tmp_path):
    single = run_ddp_equivalence(str(tmp_path / "one"))
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "two"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(script), str(out)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    double = torch.load(out / "final_weights.pt", weights_only=True)
    for k, v in single.items():
        assert torch.allclose(v, double[k], rtol=1e-5, atol=1e-6), (k, v, double[k])
    ckpt = load_checkpoint_file(str(out / "model_final.pth"))
    assert ckpt["iteration"] == 6 and len(ckpt["rng_states"]) == 2  # every rank's RNG state
    assert not any(k.startswith("module.") for k in ckpt["model"])  # unwrapped from DDP


def test_model_ema_warms_up_then_uses_its_decay():
    from sgg.engine.trainer import ModelEMA

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, 0.99)
    expected = 0.0
    for n in range(1, 301):
        with torch.no_grad():
            model.weight.fill_(float(n))
        ema.update(model)
        d = min(0.99, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * n
        assert ema.model.weight.item() == pytest.approx(expected, rel=1e-5)
        if n == 1:  # the first update keeps only 2/11 of the initial weights
            assert ema.model.weight.item() == pytest.approx(9 / 11)
    # once (1 + n) / (10 + n) > decay, the plain decay applies
    ema.updates = 1000
    before = ema.model.weight.item()
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.99 * before + 0.01 * 300, rel=1e-6)
