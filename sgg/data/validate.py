"""Check a VG150-format dataset (SGB h5 + dicts json + image_data.json + images [+ depth]) before
a long run, and report EVERY problem at once with the file, the row / image id and the fix.

The loader (:mod:`sgg.data.datasets.vg150`) stops at the first problem it meets, often hours into
a job (an undecodable image is only read when its batch comes). :func:`validate_dataset` reads the
same files the same way (the loader's own box decode, dicts reader and ``image_data.json`` rule)
and checks, vectorised over the whole h5:

* h5: required datasets present and of consistent shapes; ``img_to_first/last_box`` and
  ``img_to_first/last_rel`` inside the arrays, ``first <= last`` and both ``-1`` together (no
  boxes / relations); boxes finite, centres >= 0 and ``w, h > 0`` (i.e. ``x2 >= x1``,
  ``y2 >= y1`` after the decode), inside their image after the decode and rescale (the loader
  clips a box that sticks out: a warning; a box entirely outside is clipped to nothing: an
  error, on which the loader stops too; one rule for both: ``vg150_files.box_image_fit``);
  labels in ``1..num_classes`` and predicates in ``1..num_predicates`` of the dicts json;
  each relation's subject / object inside its own image's box range; split values (0 train,
  2 test; 1 is never loaded by SGB's loader);
* dicts json: readable by the loader, ``*_to_idx`` contiguous ``1..N`` and ``idx_to_label`` /
  ``idx_to_predicate`` contiguous ``1..N`` and consistent with them;
* ``image_data.json``: usable rows (after dropping the 4 known-corrupt VG ids) == h5 rows (the
  loader's rule), each with ``image_id`` / ``width`` / ``height``, no duplicate id;
* images (optional, slow on the real VG: a progress bar, several threads): present, decodable
  (``cv2`` through the loader's reader), of the size ``image_data.json`` says;
* depth maps (optional): ``{image_id}.png`` (16 bit) or ``.npy`` present, readable, of the
  image's size.

Each selected split must load >= 1 image (an empty train or test split is an error, with the cause:
no row with its split value, no row with boxes and relations, or ``DATASETS.NUM_VAL_IMAGES`` taking
every train image; an empty val split with ``num_val_im = 0`` is a warning).

Image and depth files are checked for the images the loader would read in the selected splits
(images with >= 1 object and >= 1 relation; ``val`` = the first ``num_val_im`` train images); the
h5 / json checks always cover the whole files. Images without relations are warnings (the loader
skips them), not errors.

Usage::

    from sgg.data.validate import validate_dataset
    report = validate_dataset(get_dataset_files("synthvg_small_train", "datasets"))
    print(report.format()); sys.exit(report.exit_code)

or ``python tools/validate_dataset.py --config-file CFG`` (see the tool's ``--help``).

A coco_json folder (:mod:`sgg.data.datasets.coco_json`) is checked by the reader's own rules
(:func:`~sgg.data.datasets.coco_json.check_split`: one rule set, every problem listed as
``file: id: message: fix``) for the files of the selected splits, then each split must load >= 1
image, then its image files are decoded and their sizes compared as for VG150.

The other formats (``oiv6``, ``gqa200``, ``psg``) are checked by building each selected split with
the format's reader, which checks every record as it parses and stops at the first problem of a
file: that problem is the report's error for the file (``file: where: message: fix``); then empty
splits and the image files as above.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .datasets import coco_json, vg150_files
from .datasets.vg150 import empty_split_reason, imread, load_depth, load_image_filenames, load_info
from .datasets.vg150_files import (ATTRIBUTES, BOXES, CORRUPTED_IMAGE_IDS, IDX_TO_LABEL, IDX_TO_PREDICATE,
                                   IMAGE_DATA_KEYS, IMG_TO_FIRST_BOX, IMG_TO_FIRST_REL, IMG_TO_LAST_BOX,
                                   IMG_TO_LAST_REL, LABEL_TO_IDX, LABELS, PREDICATE_TO_IDX, PREDICATES,
                                   RELATIONSHIPS, SPLIT, SPLIT_TEST, SPLIT_TRAIN)

__all__ = ["Problem", "ValidationReport", "validate_dataset", "SPLITS", "REQUIRED_H5"]

SPLITS = ("train", "val", "test")
#: h5 datasets the loader reads (``attributes`` and ``boxes_512`` are optional)
REQUIRED_H5 = vg150_files.REQUIRED_KEYS
_PER_IMAGE = vg150_files.PER_IMAGE_KEYS

_FIX_REGEN = "regenerate the h5 (SGB's preprocessing, or tools/make_synthetic_vg.py for SynthVG)"
_FIX_PAIR = "regenerate the h5 or use the dicts file that matches it"
_FIX_ALIGN = ("use the image_data.json of the same release as the h5 (its rows are aligned one to one "
              "with the h5 rows, after dropping the VG ids {})").format(sorted(CORRUPTED_IMAGE_IDS))
_FIX_DATA_DIR = "set DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the folder holding the complete dataset"
_FIX_CORRUPT = ("re-download or regenerate the file (tools/make_synthetic_vg.py for SynthVG), and check the disk "
                "(full, or a copy cut short)")


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """One finding. ``where`` names the row / image (``"labels[1234]"``, ``"image 17 (h5 row 16)"``)."""

    severity: str  # "error" | "warning"
    kind: str      # groups the report (e.g. "label out of range")
    file: str
    where: str
    message: str
    fix: str

    def line(self) -> str:
        """``file: where message: fix`` (the form every report line has)."""
        where = f"{self.where} " if self.where else ""
        return f"{self.file}: {where}{self.message}: {self.fix}"


@dataclass
class ValidationReport:
    """Result of :func:`validate_dataset`.

    ``summary``: ``splits`` ({split: {images, boxes, relations}}, as the loader loads them, without
    the SGDet overlap filter), ``h5_rows``, ``num_classes`` / ``num_predicates`` (without
    background), ``class_counts`` / ``predicate_counts`` ({name: count} over the loaded splits,
    most frequent first), ``images_without_relations`` / ``images_without_boxes`` (h5 rows of
    split 0 / 2), ``images_checked``, ``depth_checked``. ``problems``: every :class:`Problem`.
    """

    files: Dict[str, str]
    summary: Dict[str, Any] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: (severity, kind) -> problems found beyond the ``max_per_kind`` stored ones
    overflow: Dict[Tuple[str, str], int] = field(default_factory=dict)

    def add(self, severity: str, kind: str, file: str, where: str, message: str, fix: str) -> None:
        self.problems.append(Problem(severity, kind, file, where, message, fix))

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not self.errors

    @property
    def exit_code(self) -> int:
        """1 with any error, else 0 (what ``tools/validate_dataset.py`` exits with)."""
        return 0 if self.ok else 1

    def count(self, severity: Optional[str] = None, kind: Optional[str] = None) -> int:
        """Problems found (stored + overflow), optionally of one severity / kind."""
        n = sum(1 for p in self.problems
                if (severity is None or p.severity == severity) and (kind is None or p.kind == kind))
        return n + sum(v for (sv, k), v in self.overflow.items()
                       if (severity is None or sv == severity) and (kind is None or k == kind))

    def grouped(self) -> "OrderedDict[Tuple[str, str], List[Problem]]":
        """Problems by (severity, kind), errors first, in the order they were found."""
        out: "OrderedDict[Tuple[str, str], List[Problem]]" = OrderedDict()
        for sev in ("error", "warning"):
            for p in self.problems:
                if p.severity == sev:
                    out.setdefault((sev, p.kind), []).append(p)
        return out

    def format_summary(self, top: int = 5) -> str:
        s = self.summary
        lines = [f"dataset: {self.files.get('roidb_file') or self.files.get('root', '?')}"]
        for key in ("dict_file", "image_file", "img_dir", "depth_dir"):
            if self.files.get(key):
                lines.append(f"  {key}: {self.files[key]}")
        if "h5_rows" in s:
            lines.append(f"  h5 rows: {s['h5_rows']}, object classes: {s.get('num_classes', '?')}, "
                         f"predicates: {s.get('num_predicates', '?')}")
        for name, d in s.get("splits", {}).items():
            what = f"  (the first {s['num_val_im']} train images: DATASETS.NUM_VAL_IMAGES)" \
                if name == "val" and "num_val_im" in s else ""
            lines.append(f"  {name:5s}: {d['images']:7d} images {d['boxes']:8d} boxes {d['relations']:8d} relations"
                         f"{what}")
        if "images_without_relations" in s:
            lines.append(f"  images without relations (skipped by the loader): {s['images_without_relations']}; "
                         f"without boxes: {s.get('images_without_boxes', 0)}")
        for key, what in (("class_counts", "object classes"), ("predicate_counts", "predicates")):
            counts = s.get(key)
            if counts:
                items = list(counts.items())
                head = ", ".join(f"{n} {c}" for n, c in items[:top])
                tail = ", ".join(f"{n} {c}" for n, c in items[-top:]) if len(items) > top else ""
                lines.append(f"  {what} (loaded splits), most frequent: {head}")
                if tail:
                    lines.append(f"  {what}, least frequent: {tail}")
                zero = [n for n, c in items if c == 0]
                if zero:
                    more = ", ..." if len(zero) > top else ""
                    lines.append(f"  {what} never seen: {len(zero)} ({', '.join(zero[:top])}{more})")
        if "images_checked" in s:
            lines.append(f"  image files checked: {s['images_checked']}" +
                         (f", depth maps checked: {s['depth_checked']}" if s.get("depth_checked") is not None else ""))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def format(self, max_per_kind: int = 20) -> str:
        """Summary, then every problem grouped by kind (at most ``max_per_kind`` lines each, with
        the count), then the verdict."""
        out = [self.format_summary()]
        groups = self.grouped()
        if groups:
            out.append("")
        for (sev, kind), probs in groups.items():
            n = len(probs) + self.overflow.get((sev, kind), 0)
            out.append(f"{sev.upper()}: {kind} ({n})")
            out.extend("  " + p.line() for p in probs[:max_per_kind])
            if n > max_per_kind:
                out.append(f"  ... and {n - min(len(probs), max_per_kind)} more ({kind})")
        n_err, n_warn = self.count("error"), self.count("warning")
        out.append("")
        out.append(f"{'OK' if self.ok else 'FAILED'}: {n_err} error(s), {n_warn} warning(s)")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def _as_files(files: Any) -> Dict[str, str]:
    if isinstance(files, Mapping):
        d = dict(files)
    elif hasattr(files, "roidb_file"):
        d = {k: getattr(files, k) for k in ("roidb_file", "dict_file", "image_file", "img_dir", "depth_dir")
             if hasattr(files, k)}
    elif isinstance(files, (tuple, list)) and len(files) == 4:
        d = dict(zip(("roidb_file", "dict_file", "image_file", "img_dir"), files))
    else:
        raise TypeError("files must be a DatasetFiles (sgg.data.catalog), a mapping with roidb_file / dict_file / "
                        "image_file / img_dir, or the tuple (roidb_file, dict_file, image_file, img_dir)")
    for k in ("roidb_file", "dict_file", "image_file", "img_dir"):
        if k not in d:
            raise TypeError(f"files lacks '{k}'")
    return {k: str(v) for k, v in d.items() if v is not None}


def _ranges(first: np.ndarray, last: np.ndarray, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(owner image row per element, element index) for the inclusive ranges of ``rows``."""
    n = (last[rows] - first[rows] + 1).astype(np.int64)
    owner = np.repeat(rows, n)
    starts = np.repeat(first[rows].astype(np.int64), n)
    offsets = np.arange(owner.size) - np.repeat(np.cumsum(n) - n, n)
    return owner, starts + offsets


def _split_selection(split_arr: np.ndarray, first_box: np.ndarray, first_rel: np.ndarray,
                     num_val_im: int) -> Dict[str, np.ndarray]:
    """h5 rows each split loads, in file order: the selection of ``vg150.load_graphs`` with
    ``filter_empty_rels=True`` and no overlap filter (what :func:`sgg.data.build.build_dataset`
    asks for)."""
    base = (first_box >= 0) & (first_rel >= 0)
    train = np.flatnonzero((split_arr == SPLIT_TRAIN) & base)
    test = np.flatnonzero((split_arr == SPLIT_TEST) & base)
    if num_val_im > 0:
        return {"train": train[num_val_im:], "val": train[:num_val_im], "test": test}
    return {"train": train, "val": train[:0], "test": test}


def _check_empty_splits(report: ValidationReport, roidb: str, split_arr: np.ndarray, first_box: np.ndarray,
                        first_rel: np.ndarray, sel: Dict[str, np.ndarray], splits: Sequence[str],
                        num_val_im: int) -> None:
    """A selected split that loads no image is an error (training / evaluating it fails), with the
    loader's explanation (:func:`sgg.data.datasets.vg150.empty_split_reason`); an empty val split
    with ``num_val_im <= 0`` is only a warning (no validation split was asked for)."""
    for name in splits:
        flag = SPLIT_TEST if name == "test" else SPLIT_TRAIN
        rows = split_arr == flag
        with_boxes = rows & (first_box >= 0)
        usable = with_boxes & (first_rel >= 0)
        counts = {"rows": int(rows.sum()), "with_boxes": int(with_boxes.sum()), "usable": int(usable.sum()),
                  "selected": int(sel[name].size)}
        reason = empty_split_reason(name, counts, num_val_im)
        if reason is None:
            continue
        severity = "warning" if name == "val" and num_val_im <= 0 else "error"
        fix = reason[1]
        if name != "test" and counts["selected"] == 0 and counts["usable"] > 0:
            fix += " (here: --num-val-images)"
        elif counts["rows"] == 0:
            fix += f" (here: --split {'train' if name == 'test' else 'test'})"
        report.add(severity, "empty split", roidb, f"{name} split", f"has no image: {reason[0]}", fix)


class _H5:
    """The h5 arrays (None where missing / unreadable)."""

    def __init__(self) -> None:
        self.arrays: Dict[str, np.ndarray] = {}
        self.n_rows = 0


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------
def _check_dicts(report: ValidationReport, dict_file: str) -> Tuple[Optional[List[str]], Optional[List[str]]]:
    """The loader's class / predicate lists (with background), or None when unreadable."""
    if not os.path.isfile(dict_file):
        report.add("error", "missing file", dict_file, "", "the dicts json does not exist", _FIX_DATA_DIR)
        return None, None
    try:
        classes, predicates, _ = load_info(dict_file)
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e.__cause__, ValueError):  # the JSON itself does not parse (vg150_files.read_dicts)
            report.add("error", "dicts json", dict_file, "", f"is not valid JSON ({e.__cause__}): it is truncated "
                       f"or corrupt", _FIX_CORRUPT)
            return None, None
        report.add("error", "dicts json", dict_file, "", f"the loader cannot read it ({e})",
                   "use SGB's VG-SGG-dicts(-with-attri).json (label_to_idx / predicate_to_idx numbered 1..N)")
        return None, None
    info = vg150_files.read_dicts(dict_file)
    for idx_key, name_key, names in ((IDX_TO_LABEL, LABEL_TO_IDX, classes),
                                     (IDX_TO_PREDICATE, PREDICATE_TO_IDX, predicates)):
        if idx_key not in info:
            report.add("warning", "dicts json", dict_file, f"'{idx_key}'",
                       f"is missing (the loader uses '{name_key}' only)",
                       f"add '{idx_key}' = {{\"1\": name, ...}} for tools that print names")
            continue
        m = info[idx_key]
        try:
            keys = sorted(int(k) for k in m)
        except (TypeError, ValueError):
            report.add("error", "dicts json", dict_file, f"'{idx_key}'", "has non-integer keys",
                       "keys must be \"1\"..\"N\"")
            continue
        if keys != list(range(1, len(keys) + 1)):
            gaps = sorted(set(range(1, max(keys, default=0) + 1)) - set(keys))[:10]
            report.add("error", "dicts json", dict_file, f"'{idx_key}'",
                       f"is not contiguous 1..{len(keys)} (sorted keys {keys[:10]}{'...' if len(keys) > 10 else ''}; "
                       f"missing {gaps})", f"number the entries 1..N without gaps, as '{name_key}'")
            continue
        if len(keys) != len(names) - 1:
            report.add("error", "dicts json", dict_file, f"'{idx_key}'",
                       f"has {len(keys)} entries but '{name_key}' has {len(names) - 1}",
                       f"make '{idx_key}' the inverse of '{name_key}'")
            continue
        bad = [i for i in keys if m[str(i)] != names[i]]
        for i in bad[:20]:
            report.add("error", "dicts json", dict_file, f"'{idx_key}'[\"{i}\"]",
                       f"= {m[str(i)]!r} but '{name_key}' maps {names[i]!r} to {i}",
                       f"make '{idx_key}' the inverse of '{name_key}'")
    return classes, predicates


def _read_h5(report: ValidationReport, roidb_file: str) -> Optional[_H5]:
    if not os.path.isfile(roidb_file):
        report.add("error", "missing file", roidb_file, "", "the h5 does not exist", _FIX_DATA_DIR)
        return None
    h = _H5()
    try:
        shapes = vg150_files.h5_shapes(roidb_file)
        for k in REQUIRED_H5:
            if k not in shapes:
                report.add("error", "h5 dataset missing", roidb_file, f"'{k}'",
                           "is missing (not an SGB VG-SGG h5)", _FIX_REGEN)
        h.arrays.update(vg150_files.read_h5(roidb_file, [k for k in REQUIRED_H5 if k in shapes], optional=()))
        if ATTRIBUTES in shapes:  # only its shape is checked: the loader never needs more
            h.arrays["attributes_shape"] = np.asarray(shapes[ATTRIBUTES])
    except OSError as e:
        cause = e.__cause__ if e.__cause__ is not None else e  # h5py's own message
        report.add("error", "h5 unreadable", roidb_file, "",
                   f"is truncated, corrupt or unreadable ({os.path.getsize(roidb_file)} bytes; h5py: {cause})",
                   _FIX_CORRUPT)
        return None
    a = h.arrays
    # shapes: per-image arrays of one length N; labels (O, 1); boxes (O, 4); relationships (R, 2); predicates (R, 1)
    lens = {k: a[k].shape[0] for k in _PER_IMAGE if k in a and a[k].ndim >= 1}
    for k in _PER_IMAGE:
        if k in a and a[k].ndim != 1:
            report.add("error", "h5 shape", roidb_file, f"'{k}'", f"has shape {a[k].shape}, expected (N,)", _FIX_REGEN)
            a.pop(k)
    if len(set(lens.values())) > 1:
        report.add("error", "h5 shape", roidb_file, "", f"the per-image datasets have different lengths {lens}",
                   _FIX_REGEN)
        for k in _PER_IMAGE:
            a.pop(k, None)
    h.n_rows = next(iter(lens.values())) if lens and len(set(lens.values())) == 1 else 0
    for k in (LABELS, PREDICATES):  # the loader reads column 0 of an (n, 1) dataset
        if k in a:
            arr = a[k]
            if arr.ndim == 2 and arr.shape[1] >= 1:
                a[k] = arr[:, 0]
            else:
                report.add("error", "h5 shape", roidb_file, f"'{k}'", f"has shape {arr.shape}, expected (n, 1)",
                           _FIX_REGEN)
                a.pop(k)
    bkey = BOXES
    if bkey in a and (a[bkey].ndim != 2 or a[bkey].shape[1] != 4):
        report.add("error", "h5 shape", roidb_file, f"'{bkey}'", f"has shape {a[bkey].shape}, expected (O, 4)",
                   _FIX_REGEN)
        a.pop(bkey)
    if RELATIONSHIPS in a and (a[RELATIONSHIPS].ndim != 2 or a[RELATIONSHIPS].shape[1] != 2):
        report.add("error", "h5 shape", roidb_file, "'relationships'",
                   f"has shape {a['relationships'].shape}, expected (R, 2)", _FIX_REGEN)
        a.pop(RELATIONSHIPS)
    if LABELS in a and bkey in a and a[LABELS].shape[0] != a[bkey].shape[0]:
        report.add("error", "h5 shape", roidb_file, "'labels'",
                   f"has {a['labels'].shape[0]} rows but '{bkey}' has {a[bkey].shape[0]}", _FIX_REGEN)
        a.pop(bkey)  # the box checks would index past one of the two
    if RELATIONSHIPS in a and PREDICATES in a and a[RELATIONSHIPS].shape[0] != a[PREDICATES].shape[0]:
        report.add("error", "h5 shape", roidb_file, "'predicates'",
                   f"has {a['predicates'].shape[0]} rows but 'relationships' has {a['relationships'].shape[0]}",
                   _FIX_REGEN)
        a.pop(PREDICATES)
    if "attributes_shape" in a and LABELS in a:
        shp = tuple(int(v) for v in a.pop("attributes_shape"))
        if len(shp) != 2 or shp[0] != a[LABELS].shape[0]:
            report.add("error", "h5 shape", roidb_file, "'attributes'",
                       f"has shape {shp}, expected ({a['labels'].shape[0]}, 10)", _FIX_REGEN)
    a.pop("attributes_shape", None)
    return h


def _check_ranges(report: ValidationReport, roidb_file: str, a: Dict[str, np.ndarray], kind: str,
                  first_key: str, last_key: str, total: int, what: str, cap: int) -> np.ndarray:
    """Check one pair of index arrays; returns a bool mask of the rows whose range is valid
    (non-empty and inside the arrays)."""
    first = a[first_key].astype(np.int64)
    last = a[last_key].astype(np.int64)
    none_f, none_l = first == -1, last == -1
    valid = ~none_f & ~none_l
    rows = np.flatnonzero(none_f != none_l)
    for r in rows[:cap]:
        report.add("error", kind, roidb_file, f"image row {r}",
                   f"{first_key} = {first[r]} but {last_key} = {last[r]} (both must be -1 when the image has no "
                   f"{what})", _FIX_REGEN)
    _more(report, "error", kind, rows.size, cap)
    bad = valid & ((first < 0) | (last < 0) | (first >= total) | (last >= total))
    rows = np.flatnonzero(bad)
    for r in rows[:cap]:
        report.add("error", kind, roidb_file, f"image row {r}",
                   f"{first_key}..{last_key} = {first[r]}..{last[r]} lies outside the {total} {what} of the file",
                   _FIX_REGEN)
    _more(report, "error", kind, rows.size, cap)
    valid &= ~bad
    rows = np.flatnonzero(valid & (last < first))
    for r in rows[:cap]:
        report.add("error", kind, roidb_file, f"image row {r}",
                   f"{last_key} = {last[r]} < {first_key} = {first[r]}", _FIX_REGEN)
    _more(report, "error", kind, rows.size, cap)
    valid &= last >= first
    return valid


def _more(report: ValidationReport, severity: str, kind: str, count: int, cap: int) -> None:
    """Count the ``count - cap`` further rows of one check that were not stored (keeps memory
    bounded on huge, badly broken files; the report prints the true count)."""
    if count > cap:
        report.overflow[(severity, kind)] = report.overflow.get((severity, kind), 0) + count - cap


def _check_h5_content(report: ValidationReport, files: Dict[str, str], h: _H5, classes, predicates,
                      cap: int) -> Dict[str, np.ndarray]:
    """Label / predicate ranges, box values, relation indices. Returns derived arrays
    (``valid_box``, ``valid_rel`` per image row, ``decoded`` xyxy boxes in the 1024 frame,
    ``box_ok`` per object)."""
    roidb = files["roidb_file"]
    dicts = files["dict_file"]
    a = h.arrays
    out: Dict[str, np.ndarray] = {}
    bkey = BOXES
    n_obj = a[LABELS].shape[0] if LABELS in a else (a[bkey].shape[0] if bkey in a else 0)
    n_rel = a[RELATIONSHIPS].shape[0] if RELATIONSHIPS in a else 0

    # split values
    if SPLIT in a:
        sp = a[SPLIT]
        rows = np.flatnonzero(~np.isin(sp, (SPLIT_TRAIN, 1, SPLIT_TEST)))
        for r in rows[:cap]:
            report.add("error", "split value", roidb, f"split[{r}]", f"= {sp[r]} is not 0 (train) or 2 (test)",
                       _FIX_REGEN)
        _more(report, "error", "split value", rows.size, cap)
        ones = np.flatnonzero(sp == 1)
        if ones.size:
            report.add("warning", "split value", roidb, f"split[{ones[0]}]",
                       f"= 1 in {ones.size} row(s): SGB's loader never loads them (train = 0, test = 2, val = the "
                       f"first DATASETS.NUM_VAL_IMAGES train images)", "set them to 0 or 2 if they should be used")

    # index ranges
    if IMG_TO_FIRST_BOX in a and IMG_TO_LAST_BOX in a:
        out["valid_box"] = _check_ranges(report, roidb, a, "box index range", IMG_TO_FIRST_BOX, IMG_TO_LAST_BOX,
                                         n_obj, "boxes", cap)
    if IMG_TO_FIRST_REL in a and IMG_TO_LAST_REL in a:
        out["valid_rel"] = _check_ranges(report, roidb, a, "relation index range", IMG_TO_FIRST_REL,
                                         IMG_TO_LAST_REL, n_rel, "relations", cap)
    if "valid_box" in out and "valid_rel" in out:
        no_box = (a[IMG_TO_FIRST_BOX] == -1) & (a[IMG_TO_LAST_BOX] == -1)
        rows = np.flatnonzero(out["valid_rel"] & no_box)  # a broken box range is reported above
        for r in rows[:cap]:
            report.add("error", "relation index range", roidb, f"image row {r}",
                       "has relations but no boxes (img_to_first_box = -1)", _FIX_REGEN)
        _more(report, "error", "relation index range", rows.size, cap)
        out["valid_rel"] &= out["valid_box"]

    # labels / predicates
    for key, names, noun, zero in ((LABELS, classes, "classes", "background"),
                                   (PREDICATES, predicates, "predicates", "'no relation'")):
        if names is None or key not in a:
            continue
        n, ids = len(names) - 1, a[key]
        kind = f"{key[:-1]} out of range"
        rows = np.flatnonzero((ids < 1) | (ids > n))
        for r in rows[:cap]:
            rel = f"> {n} {noun}" if ids[r] > n else f"< 1 (0 is {zero})"
            report.add("error", kind, roidb, f"{key}[{r}]", f"= {ids[r]} {rel} in {os.path.basename(dicts)}",
                       _FIX_PAIR)
        _more(report, "error", kind, rows.size, cap)

    # box values, then the loader's decode on the sane rows
    if bkey in a:
        boxes = a[bkey]
        finite = np.isfinite(boxes).all(1) if boxes.dtype.kind == "f" else np.ones(boxes.shape[0], bool)
        rows = np.flatnonzero(~finite)
        for r in rows[:cap]:
            report.add("error", "box value", roidb, f"{bkey}[{r}]", f"= {boxes[r].tolist()} is not finite", _FIX_REGEN)
        _more(report, "error", "box value", rows.size, cap)
        with np.errstate(invalid="ignore"):
            neg = finite & (boxes[:, :2] < 0).any(1)
            nonpos = finite & (boxes[:, 2:] <= 0).any(1)
        rows = np.flatnonzero(neg)
        for r in rows[:cap]:
            report.add("error", "box value", roidb, f"{bkey}[{r}]",
                       f"= {boxes[r].tolist()} ([cx, cy, w, h]) has a negative centre", _FIX_REGEN)
        _more(report, "error", "box value", rows.size, cap)
        rows = np.flatnonzero(nonpos)
        for r in rows[:cap]:
            w, hh = boxes[r, 2], boxes[r, 3]
            what = []
            if w <= 0:
                what.append(f"width {w} <= 0 (x2 < x1 after the decode)" if w < 0 else "width 0 (x2 = x1)")
            if hh <= 0:
                what.append(f"height {hh} <= 0 (y2 < y1 after the decode)" if hh < 0 else "height 0 (y2 = y1)")
            report.add("error", "box value", roidb, f"{bkey}[{r}]",
                       f"= {boxes[r].tolist()} ([cx, cy, w, h]) has {' and '.join(what)}", _FIX_REGEN)
        _more(report, "error", "box value", rows.size, cap)
        ok = finite & ~neg & ~nonpos
        decoded = np.zeros(boxes.shape, np.float64)
        if ok.any():
            # the loader's own decode (int truncation)
            decoded[ok] = vg150_files.decode_boxes_inplace(boxes[ok].copy(), roidb)
        out["decoded"] = decoded
        out["box_ok"] = ok

    # relations inside their own image's boxes
    if RELATIONSHIPS in a and "valid_rel" in out and IMG_TO_FIRST_BOX in a:
        fb = a[IMG_TO_FIRST_BOX].astype(np.int64)
        lb = a[IMG_TO_LAST_BOX].astype(np.int64)
        fr = a[IMG_TO_FIRST_REL].astype(np.int64)
        lr = a[IMG_TO_LAST_REL].astype(np.int64)
        rows_img = np.flatnonzero(out["valid_rel"])
        owner, rel_rows = _ranges(fr, lr, rows_img)
        rel = a[RELATIONSHIPS][rel_rows].astype(np.int64)
        bad = ((rel < fb[owner][:, None]) | (rel > lb[owner][:, None])).any(1)
        for k in np.flatnonzero(bad)[:cap]:
            r, img = int(rel_rows[k]), int(owner[k])
            report.add("error", "relation outside its image", roidb, f"relationships[{r}]",
                       f"= {rel[k].tolist()} (global object indices) but its image (h5 row {img}) has objects "
                       f"{fb[img]}..{lb[img]}", _FIX_REGEN)
        _more(report, "error", "relation outside its image", int(bad.sum()), cap)
        selfrel = ~bad & (rel[:, 0] == rel[:, 1])
        if selfrel.any():
            k = int(np.flatnonzero(selfrel)[0])
            report.add("warning", "relation to itself", roidb, f"relationships[{int(rel_rows[k])}]",
                       f"= {rel[k].tolist()}: subject == object in {int(selfrel.sum())} relation(s)",
                       "no model predicts such pairs; drop them when regenerating the h5")
    return out


def _check_image_data(report: ValidationReport, files: Dict[str, str], n_rows: int, cap: int):
    """``(filenames, info)`` aligned with the h5 rows, or ``(None, None)`` when they cannot be."""
    image_file, img_dir, roidb = files["image_file"], files["img_dir"], files["roidb_file"]
    if not os.path.isfile(image_file):
        report.add("error", "missing file", image_file, "", "image_data.json does not exist", _FIX_DATA_DIR)
        return None, None
    try:
        with open(image_file) as f:
            data = json.load(f)
    except ValueError as e:
        report.add("error", "image_data.json", image_file, "", f"is not valid JSON ({e}): it is truncated or corrupt",
                   _FIX_CORRUPT)
        return None, None
    if not isinstance(data, list):
        report.add("error", "image_data.json", image_file, "", "must hold a JSON list of {image_id, width, height}",
                   "use SGB's image_data.json")
        return None, None
    broken = False
    for k, img in enumerate(data):
        miss = [key for key in IMAGE_DATA_KEYS if not isinstance(img, dict) or key not in img]
        if miss:
            report.add("error", "image_data.json entry", image_file, f"entry {k}", f"has no {miss}",
                       "every entry needs image_id, width and height")
            broken = True
            continue
        try:
            w, hh, iid = int(img["width"]), int(img["height"]), int(img["image_id"])
        except (TypeError, ValueError):
            report.add("error", "image_data.json entry", image_file, f"entry {k}",
                       f"has non-integer image_id / width / height {img}", "fix the entry")
            broken = True
            continue
        if w <= 0 or hh <= 0:
            report.add("error", "image_data.json entry", image_file, f"entry {k} (image {iid})",
                       f"has size {w}x{hh}", "width and height must be the image's pixel size (> 0)")
    if broken:
        return None, None
    ids = np.array([int(img["image_id"]) for img in data], np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    for iid in uniq[counts > 1][:cap]:
        report.add("error", "image_data.json entry", image_file, f"image {iid}",
                   f"appears {int(counts[uniq == iid][0])} times", "each image id once, in the h5 row order")
    try:
        fns, info = load_image_filenames(img_dir, image_file, n_rows, roidb)
    except ValueError as e:
        hint = ""
        if os.path.isdir(img_dir):
            on_disk = {int(os.path.splitext(n)[0]) for n in os.listdir(img_dir)
                       if os.path.splitext(n)[0].isdigit()}
            absent = sorted(on_disk - set(ids.tolist()) - set(CORRUPTED_IMAGE_IDS))
            if absent:
                shown = ", ".join(str(i) for i in absent[:10])
                hint = (f"; images on disk without an image_data.json row: {shown}"
                        f"{' ...' if len(absent) > 10 else ''} (a removed row?)")
        report.add("error", "image_data.json rows", image_file, "",
                   f"{str(e).rstrip('.')}{hint}", _FIX_ALIGN)
        report.notes.append("image / depth / box-in-image checks skipped: image_data.json is not aligned with "
                            "the h5")
        return None, None
    return fns, info


def _check_boxes_in_images(report: ValidationReport, roidb: str, a: Dict[str, np.ndarray], derived, info,
                           cap: int) -> None:
    if "decoded" not in derived or "valid_box" not in derived:
        return
    rows = np.flatnonzero(derived["valid_box"])
    owner, obj = _ranges(a[IMG_TO_FIRST_BOX].astype(np.int64), a[IMG_TO_LAST_BOX].astype(np.int64), rows)
    keep = derived["box_ok"][obj]
    owner, obj = owner[keep], obj[keep]
    W = np.array([int(i["width"]) for i in info], np.float64)
    H = np.array([int(i["height"]) for i in info], np.float64)
    w, h = W[owner], H[owner]
    # the loader's rule (it raises on ``outside`` and warns on ``sticks``): the loader's rescale
    # (boxes_1024 / 1024 * max(w, h)); SGB clips to [0, w - 1] x [0, h - 1], so a box entirely
    # outside ends up empty; rounding in the 1024 frame moves a border a few px (the tolerance)
    b, outside, sticks = vg150_files.box_image_fit(derived["decoded"][obj], w, h)
    bkey = BOXES
    for k in np.flatnonzero(outside)[:cap]:
        img = int(owner[k])
        report.add("error", "box outside its image", roidb, f"{bkey}[{int(obj[k])}] (image {info[img]['image_id']}, "
                   f"h5 row {img})", f"is {np.round(b[k], 1).tolist()} (xyxy px) in a {int(w[k])}x{int(h[k])} image: "
                   f"the loader clips it to an empty box", "check that image_data.json (sizes) belongs to this h5, "
                   "or drop the box when regenerating the h5")
    _more(report, "error", "box outside its image", int(outside.sum()), cap)
    n = int(sticks.sum())
    for k in np.flatnonzero(sticks)[:cap]:
        img = int(owner[k])
        report.add("warning", "box extends beyond its image", roidb,
                   f"{bkey}[{int(obj[k])}] (image {info[img]['image_id']}, h5 row {img})",
                   f"is {np.round(b[k], 1).tolist()} (xyxy px) in a {int(w[k])}x{int(h[k])} image",
                   "the loader clips it (as SGB); check image_data.json's sizes if many boxes do this")
    _more(report, "warning", "box extends beyond its image", n, cap)


def _check_one_image(path: str, expect_hw: Tuple[int, int]) -> Optional[Tuple[str, str]]:
    """None if fine, else (kind, message)."""
    import cv2

    try:
        img = imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # the loader's reader
    except FileNotFoundError:
        return "image missing", "does not exist"
    except ValueError:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        return "image undecodable", f"cannot be decoded ({size} bytes)"
    if tuple(img.shape[:2]) != tuple(expect_hw):
        return "image size", (f"is {img.shape[1]}x{img.shape[0]} (WxH) but image_data.json says "
                              f"{expect_hw[1]}x{expect_hw[0]}")
    return None


def _check_one_depth(path_png: str, path_npy: str, expect_hw: Tuple[int, int]
                     ) -> Optional[Tuple[str, str, str, str]]:
    """None if fine, else (severity, kind, file, message) about the file the loader would read
    (the PNG when both exist)."""
    import cv2

    want = f"{expect_hw[1]}x{expect_hw[0]}"
    if os.path.isfile(path_png):
        try:
            d = imread(path_png, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        except ValueError:
            return "error", "depth unreadable", path_png, f"cannot be decoded ({os.path.getsize(path_png)} bytes)"
        if d.ndim == 3:
            d = d[..., 0]
        if tuple(d.shape[:2]) != tuple(expect_hw):
            return "error", "depth size", path_png, f"is {d.shape[1]}x{d.shape[0]} (WxH) but the image is {want}"
        if d.dtype != np.uint16:
            return "warning", "depth precision", path_png, f"is {d.dtype}, not a 16-bit PNG"
        return None
    if os.path.isfile(path_npy):
        try:
            d = load_depth(path_npy)
        except (ValueError, OSError) as e:
            return "error", "depth unreadable", path_npy, f"cannot be read ({e})"
        if tuple(d.shape) != tuple(expect_hw):
            return "error", "depth size", path_npy, f"is {d.shape[1]}x{d.shape[0]} (WxH) but the image is {want}"
        return None
    return "error", "depth missing", path_png, f"does not exist (nor {os.path.basename(path_npy)})"


_IMAGE_FIX = {
    "image missing": "copy the image into the image folder, or " + _FIX_DATA_DIR[0].lower() + _FIX_DATA_DIR[1:],
    "image undecodable": "re-download or replace the file (SGB drops the 4 known-corrupt VG images the same way)",
    "image size": ("use the original image (not a resized copy), or correct width / height in image_data.json "
                   "(boxes are scaled by max(width, height) / 1024)"),
}
_DEPTH_FIX = {
    "depth missing": ("generate the depth maps for every image (16-bit {id}.png or {id}.npy) or turn "
                      "INPUT.LOAD_DEPTH off"),
    "depth unreadable": "regenerate the depth map",
    "depth size": "regenerate the depth map at the image's resolution",
    "depth precision": "write 16-bit PNGs (8 bits quantise depth to 256 levels)",
}


def _run_parallel(fn, jobs: Sequence[tuple], workers: int, progress: bool, desc: str) -> List[Any]:
    bar = None
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="img", leave=False)
    results: List[Any] = []
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(workers) as ex:  # cv2 decodes without the GIL
            for r in ex.map(lambda j: fn(*j), jobs, chunksize=16):
                results.append(r)
                if bar is not None:
                    bar.update()
    else:
        for j in jobs:
            results.append(fn(*j))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return results


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------
def validate_dataset(files: Any, check_images: bool = True, depth_dir: Optional[str] = None,
                     max_images: Optional[int] = None, *, splits: Iterable[str] = SPLITS, num_val_im: int = 5000,
                     workers: Optional[int] = None, progress: bool = False,
                     max_per_kind: int = 1000) -> ValidationReport:
    """Check one VG150-format dataset and return a :class:`ValidationReport` (never raises for a
    problem in the data; the report holds every problem found).

    Args:
        files: a :class:`sgg.data.catalog.DatasetFiles`, a mapping with ``roidb_file``,
            ``dict_file``, ``image_file``, ``img_dir`` (``depth_dir`` optional), or the tuple
            ``(roidb_file, dict_file, image_file, img_dir)``.
        check_images: decode every image of the selected splits (slow on the real VG: ~108k files).
        depth_dir: also check the depth maps ``{image_id}.png`` / ``.npy`` there (None: no depth check).
        max_images: check at most this many image (and depth) files, the first in split order.
        splits: the splits whose image / depth files are checked and that must not be empty
            (``train``, ``val``, ``test``); the h5 / json checks and the summary always cover the
            whole files.
        num_val_im: DATASETS.NUM_VAL_IMAGES (the val split = the first ``num_val_im`` train images).
        workers: threads decoding images (default: ``min(8, cpu count)``).
        progress: show a tqdm bar over the image files.
        max_per_kind: problems kept per check (the report prints fewer; see
            :meth:`ValidationReport.format`), so a broken million-row file stays cheap.
    """
    fmt = files.get("format") if isinstance(files, Mapping) else getattr(files, "format", None)
    if fmt == coco_json.FORMAT:
        root = files["root"] if isinstance(files, Mapping) else files.root
        return _validate_coco_json(root, check_images, depth_dir, max_images, tuple(splits), int(num_val_im),
                                   workers, progress, max_per_kind)
    if fmt not in (None, vg150_files.FORMAT):
        root = files["root"] if isinstance(files, Mapping) else files.root
        return _validate_by_loading(fmt, root, check_images, max_images, tuple(splits), int(num_val_im), workers,
                                    progress)
    f = _as_files(files)
    if depth_dir is not None:
        f["depth_dir"] = str(depth_dir)
    elif "depth_dir" in f:
        f.pop("depth_dir")  # a DatasetFiles always names one; check it only when asked
    splits = tuple(splits)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"splits must be among {SPLITS}, got {unknown}")
    report = ValidationReport(files=f)
    cap = max(1, int(max_per_kind))

    classes, predicates = _check_dicts(report, f["dict_file"])
    h = _read_h5(report, f["roidb_file"])
    if not os.path.isdir(f["img_dir"]):
        report.add("error", "missing file", f["img_dir"], "", "the image folder does not exist", _FIX_DATA_DIR)
    if h is None:
        return report
    a = h.arrays
    report.summary["h5_rows"] = h.n_rows
    if classes is not None:
        report.summary["num_classes"] = len(classes) - 1
    if predicates is not None:
        report.summary["num_predicates"] = len(predicates) - 1
    derived = _check_h5_content(report, f, h, classes, predicates, cap)

    # summary: what the loader loads per split
    sel = None
    if all(k in a for k in (SPLIT, IMG_TO_FIRST_BOX, IMG_TO_FIRST_REL)) and "valid_box" in derived \
            and "valid_rel" in derived:
        fb = np.where(derived["valid_box"], a[IMG_TO_FIRST_BOX], -1)
        fr = np.where(derived["valid_rel"], a[IMG_TO_FIRST_REL], -1)
        sel = _split_selection(a[SPLIT], fb, fr, int(num_val_im))
        n_box = np.where(derived["valid_box"], a[IMG_TO_LAST_BOX].astype(np.int64) - fb + 1, 0)
        n_rel = np.where(derived["valid_rel"], a[IMG_TO_LAST_REL].astype(np.int64) - fr + 1, 0)
        report.summary["num_val_im"] = int(num_val_im)
        report.summary["splits"] = {s: {"images": int(rows.size), "boxes": int(n_box[rows].sum()),
                                        "relations": int(n_rel[rows].sum())} for s, rows in sel.items()}
        _check_empty_splits(report, f["roidb_file"], a[SPLIT], fb, fr, sel, splits, int(num_val_im))
        used = (a[SPLIT] == SPLIT_TRAIN) | (a[SPLIT] == SPLIT_TEST)
        no_rel = np.flatnonzero(used & derived["valid_box"] & ~derived["valid_rel"])
        no_box = np.flatnonzero(used & ~derived["valid_box"])
        report.summary["images_without_relations"] = int(no_rel.size)
        report.summary["images_without_boxes"] = int(no_box.size)
        loaded = np.concatenate(list(sel.values()))
        for key, names, values, first, last in (("class_counts", classes, LABELS, IMG_TO_FIRST_BOX, IMG_TO_LAST_BOX),
                                                ("predicate_counts", predicates, PREDICATES, IMG_TO_FIRST_REL,
                                                 IMG_TO_LAST_REL)):
            if names is None or values not in a:
                continue
            _, rows = _ranges(a[first].astype(np.int64), a[last].astype(np.int64), loaded)
            ids = a[values][rows]
            cnt = np.bincount(ids[(ids >= 1) & (ids < len(names))], minlength=len(names))
            order = np.argsort(-cnt[1:], kind="stable") + 1
            report.summary[key] = {names[i]: int(cnt[i]) for i in order}
        # kept as warnings: the loader skips these rows, nothing fails
        for r in no_rel[:cap]:
            report.add("warning", "image without relations", f["roidb_file"], f"image row {r}",
                       "has boxes but no relation", "none needed: the loader skips it (as SGB)")
        _more(report, "warning", "image without relations", no_rel.size, cap)

    if not h.n_rows:
        return report
    fns, info = _check_image_data(report, f, h.n_rows, cap)
    if info is None:
        return report
    _check_boxes_in_images(report, f["roidb_file"], a, derived, info, cap)

    # image and depth files of the selected splits
    if sel is None:
        report.notes.append("image / depth checks skipped: the h5 index arrays are unusable")
        return report
    rows = np.concatenate([sel[s] for s in splits]) if splits else np.zeros(0, np.int64)
    total = int(rows.size)
    if max_images is not None and max_images >= 0:
        rows = rows[: int(max_images)]
        if rows.size < total:
            report.notes.append(f"checked the files of {rows.size} of {total} images (max_images)")
    workers = int(workers) if workers else min(8, os.cpu_count() or 1)
    hw = [(int(info[r]["height"]), int(info[r]["width"])) for r in rows]
    report.summary["images_checked"] = 0
    if check_images and os.path.isdir(f["img_dir"]):
        results = _run_parallel(_check_one_image, [(fns[r], hw[k]) for k, r in enumerate(rows)], workers, progress,
                                "images")
        report.summary["images_checked"] = len(results)
        per_kind: Dict[str, int] = {}
        for k, res in enumerate(results):
            if res is None:
                continue
            kind, msg = res
            per_kind[kind] = per_kind.get(kind, 0) + 1
            if per_kind[kind] <= cap:
                r = int(rows[k])
                report.add("error", kind, fns[r], f"(image {info[r]['image_id']}, h5 row {r})", msg, _IMAGE_FIX[kind])
        for kind, n in per_kind.items():
            _more(report, "error", kind, n, cap)
    elif not check_images:
        report.notes.append("image files not checked (check_images=False / --no-images)")
    if "depth_dir" in f:
        ddir = f["depth_dir"]
        report.summary["depth_checked"] = 0
        if not os.path.isdir(ddir):
            report.add("error", "missing file", ddir, "", "the depth folder does not exist",
                       "generate the depth maps (SynthVG writes depth/) or turn INPUT.LOAD_DEPTH off")
        else:
            jobs = []
            for k, r in enumerate(rows):
                stem = os.path.join(ddir, str(int(info[r]["image_id"])))
                jobs.append((stem + ".png", stem + ".npy", hw[k]))
            results = _run_parallel(_check_one_depth, jobs, workers, progress, "depth")
            report.summary["depth_checked"] = len(results)
            per_kind = {}
            for k, res in enumerate(results):
                if res is None:
                    continue
                sev, kind, path, msg = res
                per_kind[(sev, kind)] = per_kind.get((sev, kind), 0) + 1
                if per_kind[(sev, kind)] <= cap:
                    r = int(rows[k])
                    report.add(sev, kind, path, f"(image {info[r]['image_id']}, h5 row {r})", msg, _DEPTH_FIX[kind])
            for (sev, kind), n in per_kind.items():
                _more(report, sev, kind, n, cap)
    return report


def _validate_coco_json(root: str, check_images: bool, depth_dir: Optional[str], max_images: Optional[int],
                        splits: Sequence[str], num_val_im: int, workers: Optional[int], progress: bool,
                        max_per_kind: int) -> ValidationReport:
    """:func:`validate_dataset` of a coco_json folder (module docstring)."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"splits must be among {SPLITS}, got {unknown}")
    report = ValidationReport(files={"root": root, **({"depth_dir": depth_dir} if depth_dir else {})})
    cap = max(1, int(max_per_kind))
    has_val = os.path.isfile(coco_json.split_file(root, "val"))
    usable: Dict[str, bool] = {}
    for split in dict.fromkeys(["train" if s == "val" and not has_val else s for s in splits]):
        path = coco_json.split_file(root, split)
        try:
            parsed, problems = coco_json.check_split(path, max_per_kind=cap)
        except (FileNotFoundError, ValueError) as e:
            msg = str(e)
            head, _, rest = msg.partition(": ")
            report.add("error", "missing file" if isinstance(e, FileNotFoundError) else "unreadable file",
                       head, "", rest.rsplit(". Fix: ", 1)[0], "see the message")
            usable[split] = False
            continue
        for p in problems:
            report.add(p.severity, p.kind, p.file, p.where + ":", p.message, p.fix)
        usable[split] = parsed is not None
        if parsed is not None and "num_classes" not in report.summary:
            report.summary["num_classes"] = len(parsed.classes) - 1
            report.summary["num_predicates"] = len(parsed.predicates) - 1
    if "val" in splits and not has_val:
        report.notes.append(f"no val/{coco_json.ANNOTATION_FILE}: val = the first {num_val_im} usable train images "
                            f"(DATASETS.NUM_VAL_IMAGES), train the rest")
    report.summary["splits"] = {}
    jobs: List[tuple] = []
    for split in splits:
        if not usable.get("train" if split == "val" and not has_val else split):
            continue
        ds = coco_json.CocoJsonDataset(root, split, num_val_im=num_val_im, check_images=False)
        report.summary["splits"][split] = {"images": len(ds), "boxes": int(sum(len(c) for c in ds.gt_classes)),
                                           "relations": int(sum(len(r) for r in ds.relationships))}
        reason = ds.empty_reason()
        if reason is not None:
            severity = "warning" if split == "val" and not has_val and num_val_im <= 0 else "error"
            report.add(severity, "empty split", ds.annotation_file, f"{split} split:", f"has no image: {reason[0]}",
                       reason[1])
        jobs.extend((fn, (int(i["height"]), int(i["width"]))) for fn, i in zip(ds.filenames, ds.img_info))
    _check_split_images(report, jobs, check_images, max_images, workers, progress, "the json",
                        f"the split's {coco_json.ANNOTATION_FILE}")
    return report


def _format_error_problem(report: ValidationReport, e: Exception, split: str) -> None:
    """One problem from a format reader's exception (``file: where: message: fix`` errors carry
    ``file`` / ``where``; a missing file is a FileNotFoundError naming it)."""
    text = str(e)
    file, where = getattr(e, "file", ""), getattr(e, "where", "")
    if file and hasattr(e, "message") and hasattr(e, "fix"):
        report.add("error", "bad annotation", file, where + ":", e.message, e.fix)
        return
    if file and text.startswith(f"{file}: {where}: "):
        rest = text[len(f"{file}: {where}: "):]
        message, _, fix = rest.rpartition(": ") if ": " in rest else (rest, "", "see the message")
        report.add("error", "bad annotation", file, where + ":", message, fix)
        return
    head, _, rest = text.partition(": ")
    message, _, fix = rest.partition(". Fix: ")
    kind = "missing file" if isinstance(e, FileNotFoundError) else "unreadable file"
    report.add("error", kind, head, f"{split} split:", message, fix or "see the message")


def _validate_by_loading(fmt: str, root: str, check_images: bool, max_images: Optional[int],
                         splits: Sequence[str], num_val_im: int, workers: Optional[int],
                         progress: bool) -> ValidationReport:
    """:func:`validate_dataset` of a format whose reader checks its files as it parses them (oiv6,
    gqa200, psg): each split is built by the format's class (its first problem per file becomes the
    report's error, ``file: where: message: fix``), empty splits are errors with their cause, and the
    images of the built splits are decoded and their sizes compared."""
    from .datasets.registry import DATASET_FORMAT_REGISTRY

    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"splits must be among {SPLITS}, got {unknown}")
    cls = DATASET_FORMAT_REGISTRY.get(fmt)
    report = ValidationReport(files={"root": root, "format": fmt})
    report.summary["splits"] = {}
    jobs: List[tuple] = []
    failed: Dict[str, str] = {}  # annotation file -> its error (one report line per file)
    for split in splits:
        try:
            ds = cls(root, split, num_val_im=num_val_im, check_images=False)
        except (FileNotFoundError, ValueError) as e:
            key = getattr(e, "file", "") or str(e)
            if key not in failed:
                failed[key] = split
                _format_error_problem(report, e, split)
            continue
        report.summary.setdefault("num_classes", ds.num_classes - 1)
        report.summary.setdefault("num_predicates", ds.num_predicates - 1)
        report.summary["splits"][split] = {"images": len(ds), "boxes": int(sum(len(c) for c in ds.gt_classes)),
                                           "relations": int(sum(len(r) for r in ds.relationships))}
        reason = ds.empty_reason() if hasattr(ds, "empty_reason") else None
        if reason is not None:
            severity = "warning" if split == "val" and num_val_im <= 0 else "error"
            report.add(severity, "empty split", ds.annotation_file, f"{split} split:", f"has no image: {reason[0]}",
                       reason[1])
        jobs.extend((fn, (int(i["height"]), int(i["width"]))) for fn, i in zip(ds.filenames, ds.img_info))
    jobs = list(dict.fromkeys(jobs))  # val may be a subset of test (gqa200)
    _check_split_images(report, jobs, check_images, max_images, workers, progress, "the annotation file",
                        "the image's size in the annotation file")
    return report


def _check_split_images(report: ValidationReport, jobs: List[tuple], check_images: bool, max_images: Optional[int],
                        workers: Optional[int], progress: bool, message_file: str, fix_file: str) -> None:
    """Decode the images of ``jobs`` ((path, (height, width)) of the one-file-per-split formats),
    at most ``max_images``; each problem an error naming the image (``message_file`` / ``fix_file``
    name where the expected size comes from)."""
    total = len(jobs)
    if max_images is not None and max_images >= 0:
        jobs = jobs[: int(max_images)]
        if len(jobs) < total:
            report.notes.append(f"checked the files of {len(jobs)} of {total} images (max_images)")
    report.summary["images_checked"] = 0
    if check_images and jobs:
        results = _run_parallel(_check_one_image, jobs, int(workers) if workers else min(8, os.cpu_count() or 1),
                                progress, "images")
        report.summary["images_checked"] = len(results)
        for (path, _), res in zip(jobs, results):
            if res is not None:
                report.add("error", res[0], path, "", res[1].replace("image_data.json", message_file),
                           _IMAGE_FIX[res[0]].replace("image_data.json", fix_file))
