from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from overnight.cli import cli
from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from overnight.recorder import interpreter
from overnight.recorder.interpreter import environment_argv, python_version
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import agent_config, log_text, run_burst
from tests.fixtures.gitrepo import Repo

RUNNING = "{}.{}.{}".format(*sys.version_info[:3])


def _asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The interpreters asked for their version from now on (each one a subprocess)."""
    asked: list[str] = []
    query = interpreter._query

    def counted(python: str, dists: bool) -> dict[str, object] | None:
        asked.append(python)
        return query(python, dists)

    monkeypatch.setattr(interpreter, "_query", counted)
    return asked


def test_the_running_interpreter_is_not_asked_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _asked(monkeypatch)
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(sys.executable)  # as a venv's python links to its base interpreter
    assert python_version(str(link)) == RUNNING
    assert asked == []
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    assert python_version(str(wrapper)) == RUNNING
    assert asked == [str(wrapper)]


@pytest.mark.parametrize(
    "prog",
    [
        ".venv/bin/python",
        "/home/me/.venv/bin/python",
        "~/miniconda3/envs/x/bin/python",
        "python3.11",
        "/usr/bin/python3",
        "./python",
    ],
)
def test_an_interpreter_named_by_path_or_version_runs_as_the_environments_python(
    prog: str,
) -> None:
    argv, notice = environment_argv([prog, "train.py", "--lr", "0.1"], "3.11.7")
    assert argv == ("python", "train.py", "--lr", "0.1")
    assert notice is not None and notice.startswith(f"the command's interpreter {prog} is ")
    assert "recorded as python" in notice and "Python 3.11.7" in notice


@pytest.mark.parametrize(
    "argv", [("python", "train.py"), ("python3", "-m", "pkg"), ("torchrun", "train.py")]
)
def test_commands_every_environment_runs_as_they_are_stay_as_they_are(
    argv: tuple[str, ...],
) -> None:
    assert environment_argv(argv, "3.11.7") == (argv, None)


def _laptop_venv(project: Repo) -> Path:
    """A venv inside the project, ignored by git as .venv folders are."""
    venv = project.path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    project.write(".gitignore", ".venv/\n")
    project.write("where.py", "import sys\nprint('prefix', sys.prefix, flush=True)\n")
    project.commit("where the task runs")
    project.push()
    return venv


def test_the_laptops_interpreter_is_recorded_as_python_and_enqueue_says_so(
    project: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = _laptop_venv(project)
    snap = take_snapshot(project.path, [f"{venv}/bin/python", "where.py"], SnapshotOptions())
    assert snap.spec.argv == ("python", "where.py")
    assert snap.spec.python == RUNNING  # the version of the interpreter the command named
    assert len(snap.notices) == 1 and f"{venv}/bin/python is this machine's" in snap.notices[0]
    monkeypatch.chdir(project.path)
    result = CliRunner().invoke(cli, ["snapshot", "--", ".venv/bin/python", "where.py"])
    assert result.exit_code == 0, result.output
    assert "command:      python where.py" in result.stdout
    assert "overnight: the command's interpreter .venv/bin/python is" in result.stderr


@pytest.mark.slow
def test_agents_run_laptop_interpreters_as_the_tasks_environment(
    project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path, agent_store: TaskStore
) -> None:
    venv = _laptop_venv(project)
    config = agent_config(redis_url, tmp_path / "agent", venv_cache)
    progs = (".venv/bin/python", f"{venv}/bin/python", "python{}.{}".format(*sys.version_info))
    records = [
        submit(
            agent_store,
            take_snapshot(project.path, [prog, "where.py"], SnapshotOptions()),
            TaskOptions(queue="q"),
        )
        for prog in progs
    ]
    run_burst(config)
    for prog, record in zip(progs, records, strict=True):
        done = agent_store.get(record.id)
        assert done.status is TaskStatus.FINISHED, (prog, done.error)
        prefix = log_text(agent_store, record.id).split("prefix ", 1)[1].split()[0]
        assert Path(prefix).is_relative_to(venv_cache), (prog, prefix)
