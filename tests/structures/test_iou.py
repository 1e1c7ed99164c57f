"""sgg.structures.iou: the numpy "+1" IoU helpers (no torch), shared by the data and evaluation layers."""
import os
import subprocess
import sys

import numpy as np

from sgg.structures.iou import box_iou_plus1, pairwise_iou_plus1


def test_iou_module_imports_no_torch():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "sgg", "structures", "iou.py")
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('iou', {os.path.abspath(path)!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plus1_convention_and_row_alignment():
    a = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [5, 5, 5, 5]], np.float32)
    b = np.array([[0, 0, 4, 9], [10, 10, 20, 20], [5, 5, 5, 5]], np.float32)
    m = box_iou_plus1(a, b)
    assert m.dtype == np.float32 and m.shape == (3, 3)
    assert m[0, 0] == np.float32(0.5)  # 50 / 100 with +1 areas
    row = pairwise_iou_plus1(a, b)
    assert row.dtype == np.float32
    np.testing.assert_array_equal(row, np.diagonal(m))
    assert row.tolist() == [0.5, 0.0, 1.0]


def test_evaluation_reexports_the_same_function():
    from sgg.evaluation import box_iou_plus1 as from_package
    from sgg.evaluation.sgg_eval import box_iou_plus1 as from_module

    assert from_package is box_iou_plus1 and from_module is box_iou_plus1
