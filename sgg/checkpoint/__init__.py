"""Checkpoints: reading files (:mod:`.files`: verified loading, state dicts, loading into a model),
writing and resuming sgg's (:mod:`.checkpointer`), and Scene-Graph-Benchmark's (:mod:`.sgb`, the
maskrcnn_benchmark <-> sgg name mapping of detector checkpoints; :mod:`.sgb_relation`, of relation
heads), which the Checkpointer converts when it loads one.

A training checkpoint also carries what inference needs: the run's config (``"config"``, YAML) and
the model's metadata (``"metadata"``: class and predicate names, protocol, meta-architecture, train
predicate counts), so a trained model loads from a checkpoint and a config alone
(:func:`sgg.engine.loading.load_trained_model`).
"""
from .checkpointer import (
    BEST_NAME,
    FINAL_NAME,
    LAST_CHECKPOINT,
    CheckpointError,
    Checkpointer,
    CorruptCheckpointError,
    get_rng_state,
    load_checkpoint_file,
    load_model_state,
    read_state_dict,
    restore_rank_rng,
    set_rng_state,
    unwrap_model,
)

__all__ = [
    "BEST_NAME",
    "FINAL_NAME",
    "LAST_CHECKPOINT",
    "CheckpointError",
    "Checkpointer",
    "CorruptCheckpointError",
    "get_rng_state",
    "load_checkpoint_file",
    "load_model_state",
    "read_state_dict",
    "restore_rank_rng",
    "set_rng_state",
    "unwrap_model",
]
