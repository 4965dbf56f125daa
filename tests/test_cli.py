from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from overnight import commands
from overnight.cli import cli, short_help
from overnight.errors import (
    ConnectionFailed,
    ExitCode,
    OvernightError,
    SnapshotError,
    TaskNotFound,
    exit_code_for,
)
from overnight.queue.records import Change, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import enqueue
from tests.fixtures.cli import run_cli, subprocess_env
from tests.fixtures.gitrepo import Repo

HEAVY = (
    "docker",
    "rq",
    "redis",
    "rich",
    "pynvml",
    "psutil",
    "git",
    "yaml",
    "overnight.agent",
    "fsspec",
    "paramiko",
)


def test_help_runs_as_a_subprocess() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "Queue experiments" in proc.stdout


def test_errors_map_to_named_exit_codes() -> None:
    assert exit_code_for(ConnectionFailed("x")) is ExitCode.CONNECTION
    assert exit_code_for(TaskNotFound("x")) is ExitCode.NOT_FOUND
    assert exit_code_for(SnapshotError("x")) is ExitCode.SNAPSHOT
    assert exit_code_for(OvernightError("x")) is ExitCode.FAILURE


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(COLUMNS="80"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _cli_code(*args: str) -> str:
    """Python that runs ``overnight ARGS`` in-process and requires exit code 0."""
    return (
        "from overnight.cli import cli\n"
        "try:\n"
        f"    cli({list(args)!r}, prog_name='overnight')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
    )


def _modules_loaded_by(code: str) -> list[str]:
    """The overnight.commands modules and heavy libraries a fresh interpreter has after ``code``."""
    probe = (
        f"import sys\n{code}\n"
        f"print(' '.join(m for m in sys.modules if m.startswith({HEAVY!r}) "
        "or m.startswith('overnight.commands.')), file=sys.stderr)"
    )
    return _python(probe).stderr.split()


def test_help_imports_no_command_module_nor_heavy_library() -> None:
    assert _modules_loaded_by(_cli_code("--help") + _cli_code("agent", "--help")) == []


def test_a_command_imports_only_its_own_module() -> None:
    loaded = _modules_loaded_by(_cli_code("snapshot", "--help"))
    assert "overnight.commands.snapshot" in loaded
    assert not [m for m in loaded if m.startswith(("overnight.commands.tasks", "docker", "rq"))]


@pytest.mark.slow
def test_ls_imports_neither_rq_nor_the_agent_libraries(
    redis_url: str, agent_store: TaskStore, project: Repo
) -> None:
    done = enqueue(agent_store, project, name="done-task").id
    for status in (TaskStatus.PREPARING, TaskStatus.RUNNING, TaskStatus.FINISHED):
        agent_store.transition(done, status, Change(agent="agent-a"))
    enqueue(agent_store, project, name="queued-task")
    ls = _cli_code("ls", "--redis-url", redis_url)
    proc = _python(f"import sys\n{ls}\nprint(' '.join(sys.modules), file=sys.stderr)")
    assert "done-task" in proc.stdout and "queued-task" in proc.stdout
    loaded = proc.stderr.split()
    assert "overnight.commands.tasks" in loaded
    avoid = ("rq", "docker", "psutil", "pynvml", "overnight.agent")
    assert [m for m in loaded if m.split(".")[0] in avoid or m.startswith(avoid[-1])] == []


def test_import_overnight_is_cheap_and_its_api_resolves_on_use() -> None:
    assert _modules_loaded_by("import overnight") == []
    import overnight

    assert overnight.enqueue.__module__ == "overnight.api"
    assert overnight.snapshot.__module__ == "overnight.api"
    assert set(overnight.__all__) <= set(dir(overnight))
    with pytest.raises(AttributeError, match="no_such_name"):
        overnight.no_such_name  # noqa: B018


def test_registry_matches_what_the_modules_register() -> None:
    registered: dict[str, dict[str, commands.Entry]] = {"overnight": {}, "agent": {}}
    for module in commands.MODULES:
        top, agent = click.Group("overnight"), click.Group("agent")
        importlib.import_module(f"overnight.commands.{module}").register(top, agent)
        for group in (top, agent):
            for name, command in group.commands.items():
                help_line = command.get_short_help_str(limit=1000)
                registered[group.name or ""][name] = commands.Entry(module, help_line)
    assert registered == commands.COMMANDS


@pytest.mark.slow
def test_help_lists_every_command_as_click_would() -> None:
    # The lazy listing equals click's own once every command is loaded (fresh interpreters).
    load_all = (
        "from overnight import commands\n"
        "from overnight.cli import cli, agent\n"
        "for module in commands.MODULES:\n"
        "    commands.load(module, cli, agent)\n"
    )
    for args in (["--help"], ["agent", "--help"]):
        lazy = _python(_cli_code(*args)).stdout
        assert lazy == _python(load_all + _cli_code(*args)).stdout
    lazy_top = run_cli("--help").stdout
    for name in ("agent", "snapshot", "enqueue", "ls", "show", "logs", "cancel", "retry", "clone"):
        assert f"\n  {name} " in lazy_top


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == ExitCode.USAGE
    assert "No such command 'no-such-command'" in result.output


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["ls", "--bogus"], "overnight ls"),
        (["show"], "overnight show"),
        (["enqueue", "--retries", "many", "--", "true"], "overnight enqueue"),
        (["agent", "checkout", "--nope"], "overnight agent checkout"),
    ],
)
def test_bad_usage_of_any_command_is_one_line_naming_its_help(args: list[str], where: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr.startswith("overnight: error: ")
    assert result.stderr.count("\n") == 1
    assert result.stderr.endswith(f"see `{where} --help`\n")


def test_a_group_without_a_command_still_shows_its_help() -> None:
    result = CliRunner().invoke(cli, ["agent"])
    assert "Commands:" in result.output


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("List tasks, newest first. Filters narrow it.", 60, "List tasks, newest first."),
        ("A live view of agents, their GPUs and running tasks (Ctrl-C to quit).", 30,
         "A live view of agents,..."),
        ("Print a task's output", 21, "Print a task's output"),
    ],
)  # fmt: skip
def test_short_help_is_the_first_sentence_cut_at_a_word(text: str, limit: int, shown: str) -> None:
    assert short_help(text, limit) == shown
