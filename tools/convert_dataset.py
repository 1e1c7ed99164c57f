#!/usr/bin/env python
"""``sgg convert_dataset`` run from a checkout (the code: sgg/cli/convert_dataset.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout, not installed

from sgg.cli import run_command  # noqa: E402
from sgg.cli.convert_dataset import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command(main))
