#!/usr/bin/env python
"""``sgg relation_train_distill_fisher_only`` from a checkout (sgg/cli/relation_train_distill_fisher_only.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout, not installed

from sgg.cli import run_command  # noqa: E402
from sgg.cli.relation_train_distill_fisher_only import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command(main))
