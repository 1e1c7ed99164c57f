"""Training batches resume exactly: a loader positioned at iteration k yields the batches k, k+1, ...
of the uninterrupted loader, with aspect-ratio grouping (GroupedBatchSampler) or without, one
process or several, data-loader workers or none; per-sample random draws do not depend on the
worker or the resume point."""
import itertools
import os
import sys

import numpy as np
import pytest

from sgg.data.build import GroupedBatchSampler, _Batches, build_train_loader
from sgg.data.samplers import TrainingSampler
from sgg.utils import comm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import make_synthvg, tiny_config  # noqa: E402


def streaming_grouped(indices, group_ids, b):
    """maskrcnn_benchmark's loop: an index joins its group's bucket, a full bucket is a batch."""
    buckets = {}
    for i in indices:
        bucket = buckets.setdefault(int(group_ids[i]), [])
        bucket.append(i)
        if len(bucket) == b:
            yield list(bucket)
            bucket.clear()


def take(it, n):
    return list(itertools.islice(it, n))


def groups_of(size, seed, p_portrait):
    return (np.random.default_rng(seed).random(size) < p_portrait).astype(np.int64)


@pytest.mark.parametrize("size, b, p_portrait", [(20, 2, 0.3), (13, 3, 0.5), (7, 4, 0.1), (50, 1, 0.6)])
@pytest.mark.parametrize("world", [1, 2])
def test_grouped_batches_resume_at_any_iteration(size, b, p_portrait, world):
    groups = groups_of(size, size, p_portrait)
    n = 40
    for rank in range(world):
        sampler = TrainingSampler(size, seed=11, rank=rank, world_size=world)
        full = take(iter(GroupedBatchSampler(sampler, groups, b)), n + 25)
        # the same batches, in the same order, as the streaming loop over the rank's stream
        assert full == take(streaming_grouped(iter(sampler), groups, b), n + 25)
        assert all(len(batch) == b and len({int(groups[i]) for i in batch}) == 1 for batch in full)
        for k in (1, 2, 5, 13, n):
            resumed = GroupedBatchSampler(TrainingSampler(size, seed=11, rank=rank, world_size=world), groups, b,
                                          start=k)
            assert take(iter(resumed), 25) == full[k:k + 25], (rank, k)


@pytest.mark.parametrize("grouped", [True, False])
def test_batch_keys_carry_global_positions_and_shard_the_stream(grouped):
    size, b, world = 17, 2, 2
    groups = groups_of(size, 3, 0.4)
    epochs = {e: TrainingSampler(size, seed=5).epoch_indices(e).tolist() for e in range(20)}
    seen = {}
    for rank in range(world):
        sampler = TrainingSampler(size, seed=5, rank=rank, world_size=world)
        batches = (GroupedBatchSampler(sampler, groups, b, with_positions=True) if grouped
                   else _Batches(sampler, b, with_positions=True))
        plain = (GroupedBatchSampler(sampler, groups, b) if grouped else _Batches(sampler, b))
        keyed = take(iter(batches), 60)
        assert [[i for i, _ in batch] for batch in keyed] == take(iter(plain), 60)
        for batch in keyed:
            for index, position in batch:
                # position p of the global stream: epoch p // size, place p % size; rank p % world
                assert epochs[position // size][position % size] == index and position % world == rank
                assert position not in seen  # no sample drawn twice, not by two ranks either
                seen[position] = rank
    if not grouped:  # consecutive batches: the ranks together take every position in order
        assert sorted(seen) == list(range(len(seen)))
    # ungrouped resume is positional: start = k * global batch
    if not grouped:
        full = take(iter(_Batches(TrainingSampler(size, seed=5, rank=1, world_size=2), b)), 30)
        resumed = _Batches(TrainingSampler(size, seed=5, start=7 * b * world, rank=1, world_size=2), b)
        assert take(iter(resumed), 23) == full[7:]


def test_grouped_skip_is_cheap_and_never_touches_the_dataset():
    size, b = 57_000, 6  # VG150-sized train split; 50k iterations ahead = ~5 epochs of index arithmetic
    groups = groups_of(size, 0, 0.35)
    sampler = TrainingSampler(size, seed=1, rank=1, world_size=2)
    batch = next(iter(GroupedBatchSampler(sampler, groups, b, start=50_000)))
    assert len(batch) == b and len({int(groups[i]) for i in batch}) == 1


@pytest.fixture(scope="module")
def synthvg(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("batches") / "data", num_images=20)


def keys(batch):
    """What a batch holds: each image and the size the (random) multi-scale resize gave it."""
    return [(int(d["image_id"]), tuple(d["image"].shape[-2:])) for d in batch]


@pytest.mark.parametrize("grouping", ["True", "False"])
@pytest.mark.parametrize("world", [1, 2])
def test_train_loader_resumed_at_k_yields_the_uninterrupted_batches(synthvg, tmp_path, monkeypatch, grouping,
                                                                    world):
    # the default loader (workers, aspect-ratio grouping) plus a random draw per sample (multi-scale)
    cfg = tiny_config(synthvg, str(tmp_path / "out"), "predcls", "DATALOADER.NUM_WORKERS", "2",
                      "DATALOADER.ASPECT_RATIO_GROUPING", grouping, "INPUT.MIN_SIZE_TRAIN", "(40, 48, 56, 64)",
                      "SOLVER.IMS_PER_BATCH", str(2 * world))
    monkeypatch.setattr(comm, "get_world_size", lambda: world)
    for rank in range(world):
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        full = [keys(b) for b in take(iter(build_train_loader(cfg, mode="predcls")), 16)]
        assert len({size for batch in full for _, size in batch}) > 1  # the draws happen
        for k in (3, 9):
            resumed = [keys(b) for b in take(iter(build_train_loader(cfg, mode="predcls", start_iter=k)), 5)]
            assert resumed == full[k:k + 5], (rank, k)
