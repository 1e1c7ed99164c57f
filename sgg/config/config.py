"""Loading, merging and validating configs.

``load_config(file, opts)`` = defaults <- YAML file (with ``_BASE_`` inheritance) <- ``KEY VALUE``
overrides, validated on the way: an unknown key fails with its name and the closest known keys,
a value of the wrong type fails with the key and the expected type. The result is frozen.
"""
from __future__ import annotations

import ast
import difflib
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from sgg.protocol import protocol_from_config  # noqa: F401  (re-exported: sgg.config.protocol_from_config)

from .defaults import get_default_config

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or override that cannot be applied (message says which key and why)."""


def _all_keys(node: CN, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        full = prefix + k
        if isinstance(v, CN):
            keys.extend(_all_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


def _suggest(full_key: str, root: CN) -> str:
    known = _all_keys(root)
    close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.6)
    leaf = full_key.rsplit(".", 1)[-1]
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close][:3]
    if not close:
        close = difflib.get_close_matches(full_key.upper(), known, n=3, cutoff=0.4)
    return ("; closest known keys: " + ", ".join(close)) if close else ""


def _decode(value: Any) -> Any:
    """Turn a command-line string into a Python value the way yacs does (literal_eval or str)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def decode_override(value: Any) -> Any:
    """A command-line override VALUE as :func:`merge_from_list` reads it (``"False"`` -> False,
    ``"2"`` -> 2, ``"l2"`` -> "l2"), before the type check against the key's default."""
    return _decode(value)


_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple", list: "list"}


def _coerce(full_key: str, old: Any, new: Any, source: str) -> Any:
    """Check ``new`` against the type of the default ``old``; return the value to store."""
    if isinstance(new, str) and not isinstance(old, str):
        new = _decode(new)  # YAML "(600,)" or "1e-3" strings, as yacs reads them
    if old is None or new is None:
        return new
    if isinstance(new, dict):
        raise ConfigError(f"{source}: {full_key} is a value ({_TYPE_NAMES.get(type(old), type(old).__name__)}), "
                          f"not a section")
    old_t = type(old)
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        raise ConfigError(f"{source}: {full_key} expects a bool (True/False), got {new!r}")
    if isinstance(new, bool):
        raise ConfigError(f"{source}: {full_key} expects {_TYPE_NAMES.get(old_t, old_t.__name__)}, got bool {new!r}")
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, (tuple, list)):
        if isinstance(new, (int, float, str)):
            # "(600,)" on a command line may arrive as a bare scalar: accept it as one element.
            new = (new,)
        if isinstance(new, (tuple, list)):
            return old_t(new)
    if isinstance(new, old_t):
        return new
    raise ConfigError(
        f"{source}: {full_key} expects {_TYPE_NAMES.get(old_t, old_t.__name__)} "
        f"(default {old!r}), got {type(new).__name__} {new!r}"
    )


def merge_dict(cfg: CN, updates: Dict[str, Any], source: str, root: Optional[CN] = None, prefix: str = "") -> None:
    """Merge a nested dict into ``cfg`` with key and type validation."""
    root = cfg if root is None else root
    for key, value in updates.items():
        full = prefix + key
        if key not in cfg:
            while isinstance(value, dict) and len(value) == 1:  # name the whole key the user typed
                (sub, value), = value.items()
                full += "." + sub
            raise ConfigError(f"{source}: unknown config key '{full}'{_suggest(full, root)}")
        old = cfg[key]
        if isinstance(old, CN):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {full} is a section; give its keys, not the value {value!r}")
            merge_dict(old, value, source, root, full + ".")
        else:
            cfg[key] = _coerce(full, old, value, source)


def _read_yaml(path: str, seen: Sequence[str] = ()) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path} (pass --config-file with an existing YAML)")
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ inheritance loops back to itself")
    with open(path, "r") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else list(base)
    merged: Dict[str, Any] = {}
    for b in bases:
        b_path = b if os.path.isabs(b) else os.path.join(os.path.dirname(path), b)
        _deep_update(merged, _read_yaml(b_path, tuple(seen) + (path,)))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: Dict[str, Any], src: Dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def merge_from_file(cfg: CN, path: str) -> None:
    merge_dict(cfg, _read_yaml(path), source=str(path))


def merge_from_list(cfg: CN, opts: Iterable[str]) -> None:
    """Apply ``[KEY, VALUE, KEY, VALUE, ...]`` overrides (SGB/detectron2 command-line style)."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"command-line overrides must be KEY VALUE pairs; '{opts[-1]}' has no value"
        )
    for key, raw in zip(opts[0::2], opts[1::2]):
        node: Any = {}
        cursor = node
        parts = key.split(".")
        for p in parts[:-1]:
            cursor[p] = {}
            cursor = cursor[p]
        cursor[parts[-1]] = _decode(raw)
        merge_dict(cfg, node, source="command line")


def load_config(config_file: Optional[str] = None, opts: Optional[Iterable[str]] = None,
                freeze: bool = True) -> CN:
    """Defaults <- ``config_file`` <- ``opts``; validated and (by default) frozen."""
    cfg = get_default_config()
    if config_file:
        merge_from_file(cfg, config_file)
    if opts:
        merge_from_list(cfg, opts)
    validate_config(cfg)
    if freeze:
        cfg.freeze()
    return cfg


_DTYPES = ("float32", "float16", "bfloat16")


def validate_config(cfg: CN) -> None:
    """Cross-key checks that a type check cannot catch."""
    if cfg.DTYPE not in _DTYPES:
        raise ConfigError(f"DTYPE must be one of {_DTYPES}, got {cfg.DTYPE!r}")
    rh = cfg.MODEL.ROI_RELATION_HEAD
    if rh.USE_GT_OBJECT_LABEL and not rh.USE_GT_BOX:
        raise ConfigError(
            "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True needs USE_GT_BOX True "
            "(PredCls = GT boxes + GT labels; SGCls = GT boxes; SGDet = neither)"
        )
    if not 0.0 < rh.POSITIVE_FRACTION <= 1.0:
        raise ConfigError("MODEL.ROI_RELATION_HEAD.POSITIVE_FRACTION must be in (0, 1]")
    validate_solver_config(cfg)
    if not 0.0 < cfg.TEST.RELATION.IOU_THRESHOLD <= 1.0:
        raise ConfigError("TEST.RELATION.IOU_THRESHOLD must be in (0, 1]")


def validate_solver_config(cfg: CN) -> None:
    """Values no run can use (part of :func:`validate_config`, so every job, relation or detector,
    checks them when it loads its config): each error names the key, its value and the fix.

    As in SGB, ``SOLVER.STEPS`` beyond ``SOLVER.MAX_ITER`` are allowed (those LR drops never
    happen); ``CHECKPOINT_PERIOD`` / ``VAL_PERIOD`` 0 turn periodic checkpoints / validation off.
    """
    s = cfg.SOLVER
    if s.MAX_ITER < 1:
        raise ConfigError(f"SOLVER.MAX_ITER must be >= 1 (the number of training iterations), got {s.MAX_ITER}: "
                          f"give a positive count, e.g. SOLVER.MAX_ITER 40000")
    if not s.BASE_LR > 0:
        raise ConfigError(f"SOLVER.BASE_LR must be > 0, got {s.BASE_LR}: give a positive learning rate, "
                          f"e.g. SOLVER.BASE_LR 0.01 (to freeze weights, freeze the module instead)")
    if s.IMS_PER_BATCH < 1:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH must be >= 1 (images per iteration over all ranks), "
                          f"got {s.IMS_PER_BATCH}")
    if cfg.TEST.IMS_PER_BATCH < 1:
        raise ConfigError(f"TEST.IMS_PER_BATCH must be >= 1 (images per inference batch over all ranks), "
                          f"got {cfg.TEST.IMS_PER_BATCH}")
    for key, zero in (("CHECKPOINT_PERIOD", "0 turns periodic checkpoints off (model_final.pth is still written)"),
                      ("VAL_PERIOD", "0 turns periodic validation off"),
                      ("LOG_PERIOD", "0 logs every iteration"),
                      ("WARMUP_ITERS", "0 turns the warm-up off")):
        if s[key] < 0:
            raise ConfigError(f"SOLVER.{key} must be >= 0, got {s[key]}: give a number of iterations ({zero})")
    if s.SCHEDULE.TYPE == "WarmupMultiStepLR":
        steps = list(s.STEPS)
        if any(int(x) != x or x < 0 for x in steps) or steps != sorted(steps):
            raise ConfigError(f"SOLVER.STEPS must be increasing iteration numbers >= 0 (SOLVER.SCHEDULE.TYPE "
                              f"WarmupMultiStepLR), got {tuple(steps)}: e.g. SOLVER.STEPS (10000, 16000)")
