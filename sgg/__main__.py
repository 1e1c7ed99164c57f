"""``python -m sgg <command> [args...]``: the ``sgg`` command (e.g. ``torchrun --nproc_per_node=2 -m sgg
relation_train_net --config-file ...``)."""
import sys

from sgg.cli import main

if __name__ == "__main__":
    sys.exit(main())
