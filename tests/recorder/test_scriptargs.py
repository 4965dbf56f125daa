from __future__ import annotations

from pathlib import Path

from overnight.recorder.params import Param
from overnight.recorder.scriptargs import MAX_SCRIPT_BYTES, declared_params, script_of

TRAIN = """\
import argparse
import sys

sys.exit("importing or running this file is a bug")
parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("-n", "--n-estimators", type=int, default=10)
parser.add_argument("--amp", action="store_true")
parser.add_argument("-v", action="count")
group = parser.add_mutually_exclusive_group()
group.add_argument("--compile", action=argparse.BooleanOptionalAction)
parser.add_argument(*NAMES)
"""


def test_options_are_read_without_running_the_script(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    assert declared_params(("python", "-u", "train.py", "x.csv"), tmp_path) == (
        Param(("-n", "--n-estimators")),
        Param(("--amp",), flag=True),
        Param(("-v",), flag=True),
        Param(("--compile",), flag=True),
        Param(("--no-compile",), flag=True),
    )


def test_which_file_a_command_runs(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "cli").mkdir(parents=True)
    for name in ("pkg/train.py", "pkg/cli/__main__.py", "run.py"):
        (tmp_path / name).write_text(TRAIN)
    assert script_of(("python3", "run.py", "--lr", "1"), tmp_path) == tmp_path / "run.py"
    assert script_of(("python", "-m", "pkg.train"), tmp_path) == tmp_path / "pkg/train.py"
    assert script_of(("python", "-m", "pkg.cli"), tmp_path) == tmp_path / "pkg/cli/__main__.py"
    launched = ("torchrun", "--nproc", "4", "run.py", "--lr", "1")
    assert script_of(launched, tmp_path) == tmp_path / "run.py"
    assert script_of(("python", "-c", "import run"), tmp_path) is None
    assert script_of(("python", "missing.py"), tmp_path) is None
    assert script_of(("./run.sh", "--lr", "1"), tmp_path) is None


def test_unreadable_scripts_declare_nothing(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "huge.py").write_text(TRAIN + "#" * MAX_SCRIPT_BYTES)
    (tmp_path / "plain.py").write_text("print('no argparse')\n")
    for script in ("broken.py", "huge.py", "plain.py", "missing.py"):
        assert declared_params(("python", script), tmp_path) == ()
