"""``overnight optimize`` as a user runs it, in a subprocess, with trials run by real agents:
a killed agent and a killed driver lose no trial, ``--detach`` leaves the driving to agents."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from overnight.errors import ExitCode
from overnight.optimize import settings as stored
from overnight.optimize.driver import TASK_ATTR
from overnight.queue import keys
from overnight.queue.index import Query
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import Background, agent_config, start_agent, wait_for
from tests.fixtures.cli import run_cli, subprocess_env
from tests.fixtures.gitrepo import Repo
from tests.fixtures.studies import Lab, stop_all

pytestmark = pytest.mark.slow

SEARCH = ("--metric", "loss", "--param", "x=float:-6:6", "-q", "q", "--gpus", "0", "--poll", "0.2")


def optimize(repo: Repo, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("optimize", *args, cwd=repo.path, OVERNIGHT_REDIS_URL=redis_url)


def start_driver(repo: Repo, redis_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overnight", "optimize", *args],
        cwd=repo.path,
        env=subprocess_env(OVERNIGHT_REDIS_URL=redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def study_tasks(store: TaskStore, name: str) -> list[TaskRecord]:
    sweep = store.resolve_sweep(name)
    return store.find(Query(sweep=sweep, limit=None))


def test_a_study_runs_to_its_best_and_summary_names_it(lab: Lab) -> None:
    redis_url = lab.redis_url
    agents = lab.agents()
    try:
        args = ("--study", "quad", "--trials", "8", "--parallel", "3", "--json", *SEARCH)
        result = optimize(lab.repo, redis_url, *args, "--", "python", "train.py")
    finally:
        stop_all(agents)
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    assert best["study"] == "quad" and set(best["params"]) == {"x"}
    assert "study quad: overnight summary --sweep quad" in result.stderr
    trials = lab.trials("quad")
    assert len(trials) == 8 and all(t.state is TrialState.COMPLETE for t in trials)
    shown = optimize(lab.repo, redis_url, "--best", "quad")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"best trial {best['trial']} of quad: value ")
    assert f"task {best['task']}" in shown.stdout and "  x = " in shown.stdout
    summary = run_cli("summary", "--sweep", "quad", "--metric", "loss", "--json",
                      OVERNIGHT_REDIS_URL=redis_url)  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    rows = json.loads(summary.stdout)["tasks"]
    assert len(rows) == 8 and {r["id"] for r in rows} >= {best["task"]}


def test_a_killed_agent_loses_no_trial(lab: Lab) -> None:
    redis_url, tasks = lab.redis_url, lab.store
    config = agent_config(
        redis_url, lab.base / "doomed", lab.venv_cache, name="doomed", cpu_slots=2
    )
    doomed = start_agent(config, lab.base)
    args = ("--study", "k", "--trials", "4", "--parallel", "2", "--retries", "1", *SEARCH)
    driver = start_driver(lab.repo, redis_url, *args, "--", "python", "train.py", "--sleep", "2")
    agents: list[Background] = []
    try:
        wait_for(
            lambda: any(r.status is TaskStatus.RUNNING for r in tasks.find(Query(limit=None))),
            what="a trial running on the doomed agent",
        )
        doomed.kill()
        agents = lab.agents()
        _, err = driver.communicate(timeout=100)
    finally:
        driver.kill()
        driver.communicate(timeout=10)
        doomed.kill()
        stop_all(agents)
    assert driver.returncode == 0, err
    trials = lab.trials("k")
    assert len(trials) == 4 and all(t.state is TrialState.COMPLETE for t in trials)
    records = study_tasks(tasks, "k")
    assert len(records) == 4  # requeued, not enqueued again
    again = [r for r in records if r.attempt == 1]
    assert again and all(TaskStatus.LOST in [h.status for h in r.history] for r in again)


def test_a_killed_driver_is_resumed_without_losing_a_trial(lab: Lab) -> None:
    redis_url, tasks = lab.redis_url, lab.store
    agents = lab.agents()
    try:
        args = ("--study", "r", "--trials", "6", "--parallel", "2", "--lease-ttl", "1", *SEARCH)
        cmd = ("--", "python", "train.py", "--sleep", "0.5")
        driver = start_driver(lab.repo, redis_url, *args, *cmd)
        wait_for(
            lambda: any(t.state is TrialState.COMPLETE for t in lab.trials("r")),
            what="a completed trial",
        )
        driver.send_signal(signal.SIGKILL)
        driver.communicate(timeout=10)
        resumed = optimize(lab.repo, redis_url, "--resume", "r", "--poll", "0.2")
    finally:
        driver.kill()
        driver.communicate(timeout=10)
        stop_all(agents)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("best trial ")
    trials = lab.trials("r")
    assert len(trials) == 6 and all(t.state is TrialState.COMPLETE for t in trials)
    records = study_tasks(tasks, "r")
    assert sorted(r.id for r in records) == sorted(t.user_attrs[TASK_ATTR] for t in trials)


def test_detached_studies_are_driven_by_the_agents(lab: Lab) -> None:
    redis_url, tasks = lab.redis_url, lab.store
    args = ("--study", "d", "--trials", "5", "--parallel", "2", "--detach", *SEARCH)
    started = optimize(lab.repo, redis_url, *args, "--", "python", "train.py")
    assert started.returncode == 0, started.stderr
    assert "the agents drive it now" in started.stderr
    assert tasks.redis.sismember(keys.DETACHED_STUDIES, "d")
    agents = lab.agents()
    try:
        wait_for(
            lambda: not tasks.redis.sismember(keys.DETACHED_STUDIES, "d"),
            what="the agents to finish the study",
        )
    finally:
        stop_all(agents)
    trials = lab.trials("d")
    assert len(trials) == 5 and all(t.state is TrialState.COMPLETE for t in trials)
    assert stored.load(tasks.redis, "d").detached


def test_bad_input_is_one_line(lab: Lab) -> None:
    redis_url = lab.redis_url
    bad = optimize(lab.repo, redis_url, "--metric", "loss", "--param", "x=gauss:0:1", "--",
                   "python", "train.py")  # fmt: skip
    assert bad.returncode == ExitCode.USAGE
    assert bad.stderr == (
        "overnight: error: invalid --param 'x=gauss:0:1': use NAME=float:LOW:HIGH, "
        "loguniform:LOW:HIGH, int:LOW:HIGH or choice:A,B,...\n"
    )
    unknown = optimize(lab.repo, redis_url, "--metric", "loss", "--param", "z=int:1:3", "--",
                       "python", "train.py")  # fmt: skip
    assert unknown.returncode == ExitCode.USAGE
    assert "--param z: the command has no option z" in unknown.stderr
    missing = optimize(lab.repo, redis_url, "--best", "nope")
    assert missing.returncode == ExitCode.OPTIMIZE
    assert missing.stderr.count("\n") == 1 and "no study named 'nope'" in missing.stderr


def test_without_optuna_the_error_names_the_extra(lab: Lab) -> None:
    code = (
        "import sys; sys.modules['optuna'] = None; sys.argv[0] = 'overnight'\n"
        "from overnight.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "optimize", "--best", "x"],
        cwd=lab.repo.path,
        env=subprocess_env(OVERNIGHT_REDIS_URL=lab.redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.OPTIMIZE
    assert result.stderr == (
        "overnight: error: overnight optimize needs Optuna, which is not installed here; "
        "install the extra: pip install 'overnight[optimize]'\n"
    )


def test_a_study_in_a_storage_url_of_its_own(lab: Lab, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    args = ("--study", "own", "--trials", "2", "--parallel", "2", "--storage", url, *SEARCH)
    agents = lab.agents()
    try:
        result = optimize(lab.repo, lab.redis_url, *args, "--", "python", "train.py")
    finally:
        stop_all(agents)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="own", storage=url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    without = optimize(lab.repo, lab.redis_url, "--best", "own")
    assert without.returncode == ExitCode.USAGE and "give its URL again" in without.stderr
    best = optimize(lab.repo, lab.redis_url, "--best", "own", "--storage", url)
    assert best.returncode == 0 and best.stdout.startswith("best trial "), best.stderr
    detach = optimize(lab.repo, lab.redis_url, "--resume", "own", "--detach", "--storage", url)
    assert detach.returncode == ExitCode.USAGE and "--detach needs the study" in detach.stderr


def test_optuna_is_imported_only_when_a_study_is_driven() -> None:
    code = (
        "import sys, overnight.cli, overnight.commands.optimize\n"
        "import overnight.agent.service.housekeeping\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'optuna'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout == "[]\n"
