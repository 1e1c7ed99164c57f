"""The ``sgg`` command: ``sgg <command> [args...]`` runs ``sgg.cli.<command>.main(args)``.

Each command is one module of this package with ``main(argv=None, prog=None)`` and its argparse
parser; ``tools/<command>.py`` are thin wrappers around the same ``main`` (SGB's
``python tools/relation_train_net.py ...`` / ``torchrun ... tools/relation_train_net.py ...``).
``python -m sgg <command>`` is the same as ``sgg <command>`` (``torchrun --nproc_per_node=N -m sgg
relation_train_net ...``).

Command modules are imported only when run (they import torch): ``sgg --help`` reads the one-line
summaries from the modules' docstrings without importing them.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import re
import sys
from typing import Callable, List, Optional, Sequence

# In workflow order (as ``sgg --help`` lists them).
COMMANDS = (
    "make_synthetic_vg",
    "convert_dataset",
    "validate_dataset",
    "detector_train_net",
    "relation_train_net",
    "relation_train_distill_fisher_only",
    "relation_test_net",
    "evaluate_predictions",
    "score_baselines",
    "compare_runs",
    "zoo",
    "predict",
    "export_model",
    "convert_sgb_checkpoint",
    "encode_depth",
)

USAGE = "usage: sgg [-h] [--version] <command> [args...]"


def summary(command: str) -> str:
    """The first sentence of ``sgg.cli.<command>``'s docstring, read from its source (no import)."""
    name = f"{__name__}.{command}"
    spec = importlib.util.find_spec(name)
    source = spec.loader.get_source(name) if spec is not None and spec.loader is not None else None
    doc = ast.get_docstring(ast.parse(source)) if source else importlib.import_module(name).__doc__
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    # a sentence ends at ". " before a capital letter ("e.g. plain" does not end one)
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z`])", paragraph)[0].rstrip(".")
    if len(sentence) > 80 and ": " in sentence:  # "Check a dataset before a long run: every problem ..."
        sentence = sentence.split(": ")[0]
    return sentence


def format_help() -> str:
    from sgg import __version__

    width = max(len(c) for c in COMMANDS) + 2
    lines = [USAGE, "",
             f"Scene graph generation on PyTorch (sgg {__version__}).",
             "Run 'sgg <command> --help' for the options of a command.", "",
             "commands:"]
    lines += [f"  {c:<{width}}{summary(c)}" for c in COMMANDS]
    lines += ["", "options:",
              "  -h, --help    show this message and exit",
              "  --version     print the version and exit"]
    return "\n".join(lines) + "\n"


#: Exit status of a training command stopped by SIGTERM (after writing its checkpoint): 128 + 15,
#: what a shell reports for a process killed by SIGTERM, so schedulers, ``&&`` chains and torchrun
#: see that the job did not finish; re-running the same command resumes it.
PREEMPTED_EXIT_STATUS = 128 + 15


def exit_status(result) -> int:
    """A command's return value as a process exit status: an int as is; a training job's result
    whose ``state`` is ``"preempted"`` (stopped by SIGTERM, checkpoint written) is
    :data:`PREEMPTED_EXIT_STATUS` (143); anything else (None, another training state, a metrics
    dict) is success, as the scripts always were (errors raise)."""
    if isinstance(result, dict) and result.get("state") == "preempted":
        return PREEMPTED_EXIT_STATUS
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_command(main: Callable, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run a command's ``main`` as a process: returns its exit status, and leaves the process group
    (torchrun) at the end, whatever happens."""
    kwargs = {} if prog is None else {"prog": prog}
    try:
        result = main(None if argv is None else list(argv), **kwargs)
    finally:
        if "torch.distributed" in sys.modules:  # only then can a process group exist
            from sgg.utils.comm import shutdown

            shutdown()
    return exit_status(result)


def _error(message: str) -> int:
    sys.stderr.write(f"{USAGE}\nsgg: error: {message}\n")
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    """``sgg <command> [args...]``; returns the exit status (2 for an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(format_help())
        return 2
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(format_help())
        return 0
    if argv[0] == "--version":
        from sgg import __version__

        print(f"sgg {__version__}")
        return 0
    if argv[0] == "help":  # `sgg help <command>` = `sgg <command> --help`
        return main(argv[1:2] + ["--help"] if len(argv) > 1 else ["--help"])
    command = argv[0].replace("-", "_")
    if command not in COMMANDS:
        what = "option" if argv[0].startswith("-") else "command"
        close = difflib.get_close_matches(command, COMMANDS, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return _error(f"unknown {what} {argv[0]!r}.{hint} Commands: {', '.join(COMMANDS)}.")
    module = importlib.import_module(f"{__name__}.{command}")
    return run_command(module.main, argv[1:], prog=f"sgg {command}")
