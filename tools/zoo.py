#!/usr/bin/env python
"""``sgg zoo`` run from a checkout (the code: sgg/cli/zoo.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout, not installed

from sgg.cli import run_command  # noqa: E402
from sgg.cli.zoo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command(main))
