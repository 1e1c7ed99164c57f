"""The ``sgg`` command (sgg.cli): the command list, ``--help`` of every command, unknown commands,
exit statuses, the tools/ wrappers, and (slow) the built wheel's console script in a fresh venv."""
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sgg.cli import COMMANDS, exit_status, main, run_command, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_module_and_tool_is_a_command():
    cli_dir = os.path.join(REPO, "sgg", "cli")
    modules = {f[:-3] for f in os.listdir(cli_dir) if f.endswith(".py") and f != "__init__.py"}
    tools = {f[:-3] for f in os.listdir(os.path.join(REPO, "tools")) if f.endswith(".py")}
    assert set(COMMANDS) == modules == tools
    assert len(COMMANDS) == len(set(COMMANDS)) == 15


def test_help_lists_every_command_with_its_summary(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sgg")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.startswith("   ")
              and not line.lstrip().startswith("-")]
    assert listed == list(COMMANDS)
    for cmd in COMMANDS:
        line = next(x for x in out.splitlines() if x.split()[:1] == [cmd])
        assert line.split(None, 1)[1] == summary(cmd)
    assert summary("predict") == "Predict scene graphs on your own images and draw them"
    # the first sentence only, and "e.g." does not end it
    assert summary("compare_runs") == "Compare the metrics of several runs side by side (e.g. plain Motifs vs HML)"
    assert summary("validate_dataset") == "Check a dataset (VG150, coco_json, oiv6, gqa200 or psg) before a long run"
    assert summary("relation_train_distill_fisher_only") == ("Train a relation model with HML (relation_train_net "
                                                            "with MODEL.HML.ENABLED True)")


def test_help_imports_no_command_module_and_no_torch():
    code = ("import sys; from sgg.cli import main; main(['--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('sgg.cli.') or m.split('.')[0] == 'torch'))")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_help_exits_0(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sgg {cmd} ")  # the usage line names the sub-command


def test_dashes_are_accepted_in_command_names(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare-runs", "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: sgg compare_runs ")


def test_unknown_command_exits_2_naming_the_commands(capsys):
    assert main(["relation_trian_net", "--config-file", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'relation_trian_net'" in err
    assert "Did you mean 'relation_train_net'?" in err
    assert all(cmd in err for cmd in COMMANDS)

    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'." in err and "Did you mean" not in err

    assert main(["--frobnicate"]) == 2
    assert "unknown option '--frobnicate'" in capsys.readouterr().err


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "commands:" in captured.err


def test_version_and_help_command(capsys):
    from sgg import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sgg {__version__}"
    with pytest.raises(SystemExit) as e:
        main(["help", "encode_depth"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: sgg encode_depth ")


def test_exit_status_of_command_results():
    # ints are exit statuses; None / a training state / a metrics dict mean success (as the scripts)
    assert exit_status(None) == 0 and exit_status(3) == 3 and exit_status(0) == 0
    assert exit_status({"state": "completed"}) == 0 and exit_status(1e-6) == 0 and exit_status(True) == 0
    seen = []

    def fake_main(argv, prog=None):
        seen.append((argv, prog))
        return {"state": "completed"} if argv == ["ok"] else 5

    assert run_command(fake_main, ["ok"], prog="sgg fake") == 0
    assert run_command(fake_main, ("bad",)) == 5
    assert seen == [(["ok"], "sgg fake"), (["bad"], None)]

    def failing(argv):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):  # errors propagate (traceback, exit status 1)
        run_command(failing, [])


@pytest.mark.parametrize("cmd", COMMANDS)
def test_tools_scripts_are_thin_wrappers_of_the_commands(cmd):
    path = os.path.join(REPO, "tools", f"{cmd}.py")
    with open(path) as f:
        assert len(f.read().splitlines()) <= 15
    spec = importlib.util.spec_from_file_location(f"_tool_{cmd}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main is importlib.import_module(f"sgg.cli.{cmd}").main
    assert mod.run_command is run_command


# ------------------------------------------------------------------------------------------------
def _clean_env():
    """Environment of the venv's processes: the checkout must not be reachable.

    - no PYTHONPATH (test runs often put the checkout on it);
    - PYTHONNOUSERSITE: no ~/.local site-packages;
    - a temporary cwd (``python -c`` puts the cwd first on sys.path).
    The venv is created with --system-site-packages so torch etc. come from the system; that
    system site-packages also holds the checkout's editable install (``pip install -e .``). It does
    not shadow the wheel: setuptools' editable finder is *appended* to ``sys.meta_path``, i.e. asked
    only after the regular path finder has searched every sys.path entry, and the venv's
    site-packages comes before the system one on sys.path. The test checks the outcome
    (``sgg.__file__`` inside the venv) rather than trusting this reasoning.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _run(cmd, cwd, env, timeout=120):
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_installs_the_sgg_command_in_a_fresh_venv(tmp_path):
    if sys.prefix != sys.base_prefix:
        pytest.skip("inside a virtual environment: a --system-site-packages venv would see the base "
                    "interpreter's packages, not this environment's torch")
    start = time.monotonic()
    env = _clean_env()
    # Build from a copy of the files the wheel is made of: an in-tree build writes build/ and
    # *.egg-info into the checkout, which other test runs and editors share.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy2(os.path.join(REPO, name), src / name)
    shutil.copytree(os.path.join(REPO, "sgg"), src / "sgg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "-w", str(wheels), str(src)], tmp_path, env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = [p for p in wheels.iterdir() if p.suffix == ".whl"]
    assert wheel.name.startswith("sgg_bench-"), wheel.name

    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    python, sgg = venv / "bin" / "python", venv / "bin" / "sgg"
    # --without-pip (faster): the venv's python runs the system pip (visible through the system
    # site-packages) and installs into the venv; --ignore-installed so that an installed
    # distribution of the same name (the editable one) is neither skipped nor uninstalled.
    proc = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                tmp_path, env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sgg.is_file()

    cwd = tmp_path / "elsewhere"  # no checkout here
    cwd.mkdir()
    proc = _run([str(python), "-c", "import sgg, sgg.cli; print(sgg.__file__); print(sgg.cli.__file__)"], cwd, env)
    assert proc.returncode == 0, proc.stderr
    site = os.path.realpath(venv / "lib")
    for path in proc.stdout.split():
        assert os.path.realpath(path).startswith(site + os.sep), (path, "not the venv's copy")
        assert not os.path.realpath(path).startswith(os.path.realpath(REPO) + os.sep)

    proc = _run([str(sgg), "--help"], cwd, env)
    assert proc.returncode == 0, proc.stderr
    assert all(f"  {cmd} " in proc.stdout for cmd in COMMANDS)
    proc = _run([str(sgg), "relation_trian_net"], cwd, env)
    assert proc.returncode == 2 and "Did you mean 'relation_train_net'?" in proc.stderr

    # every command imports torch (~2 s each): two at a time on two cores
    def command_help(cmd):
        return cmd, _run([str(sgg), cmd, "--help"], cwd, env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for cmd, proc in pool.map(command_help, COMMANDS):
            assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
            assert proc.stdout.startswith(f"usage: sgg {cmd} "), (cmd, proc.stdout[:200])
    print(f"wheel build + venv + install + {len(COMMANDS) + 2} sgg runs: {time.monotonic() - start:.1f} s")
