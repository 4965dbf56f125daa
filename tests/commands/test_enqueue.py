from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import redis

from overnight.errors import ExitCode
from overnight.queue import keys
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.cli import run_cli, subprocess_env
from tests.fixtures.gitrepo import Repo
from tests.fixtures.redis_urls import SecuredRedis
from tests.fixtures.services import free_port
from tests.fixtures.tasks import invoke


def test_enqueue_prints_the_id_and_stores_the_snapshot(cli_env: Repo, store: TaskStore) -> None:
    result = invoke(
        "enqueue", "-q", "gpu", "--gpus", "2", "--timeout", "8h", "--retries", "1",
        "--tag", "abl", "-m", "why", "--", "python", "train.py", "--lr", "0.01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    record = store.get(task_id)
    assert record.status is TaskStatus.QUEUED
    assert record.argv == ("python", "train.py", "--lr", "0.01")
    assert record.params == {"lr": "0.01"} and record.tags == ("abl",)
    assert record.note == "why" and record.sweep is None
    assert "overnight: recorded " in result.stderr  # the account; the id alone on stdout
    assert (record.options.queue, record.options.gpus) == ("gpu", 2)
    assert (record.options.timeout, record.options.retries) == (8 * 3600, 1)
    snapshot = store.load_snapshot(task_id)
    assert snapshot.spec.note == "why" and snapshot.spec.patch is not None
    assert b"local change" in snapshot.blob(snapshot.spec.patch)  # type: ignore[operator]


def test_sweep_is_a_cross_product_sharing_one_snapshot(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis
) -> None:
    result = invoke(
        "enqueue", "--sweep", "lr=0.1,0.01", "--sweep", "bs=32,64", "--add-param", "--",
        "python", "train.py", "--lr", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 4
    records = [store.get(i) for i in ids]
    assert [r.params for r in records] == [
        {"lr": "0.1", "bs": "32"},
        {"lr": "0.1", "bs": "64"},
        {"lr": "0.01", "bs": "32"},
        {"lr": "0.01", "bs": "64"},
    ]
    assert records[3].argv == ("python", "train.py", "--lr", "0.01", "--bs", "64")
    assert len({r.spec_id for r in records}) == 1
    sweep = records[0].sweep
    assert sweep is not None and {r.sweep for r in records} == {sweep}
    told = f"sweep {sweep}: 4 task(s); overnight summary --sweep {sweep}"
    assert result.stderr.splitlines()[-1] == told  # after the account of what was recorded
    again = invoke("enqueue", "--sweep", "lr=0.1", "--", "python", "train.py", "--lr", "1")
    assert again.exit_code == 0, again.output
    assert store.get(again.stdout.strip()).sweep not in (None, sweep)  # each enqueue: a new one
    assert len(redis_client.keys(keys.blob("*"))) == 1  # the patch, stored once


def test_after_makes_it_wait(cli_env: Repo, store: TaskStore) -> None:
    first = invoke("enqueue", "--", "python", "train.py").stdout.strip()
    result = invoke("enqueue", "--after", first[:6], "--json", "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["status"] == "waiting" and data["options"]["after"] == [first]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--sweep", "lr"], ExitCode.USAGE, "invalid --sweep 'lr': use NAME=V1,V2"),
        (["--timeout", "8 hours"], ExitCode.USAGE, "invalid --timeout '8 hours'"),
        (["--after", "abcdef"], ExitCode.NOT_FOUND, "no task has an id starting with abcdef"),
        (["-q", "a queue"], ExitCode.USAGE, "invalid queue name 'a queue'"),
        (["--retry-on", "network"], ExitCode.USAGE, "--retry-on names 'network'"),
        (["--retries", "11"], ExitCode.USAGE, "--retries must be 0 to 10, not 11"),
        (["--notify", "hooks.example.org/SECRET"], ExitCode.USAGE, "is not a URL"),
        (["--notify", "mailto:nobody"], ExitCode.USAGE, "is not an e-mail address"),
    ],
)
def test_bad_input_is_one_clear_line(
    cli_env: Repo, store: TaskStore, args: list[str], code: ExitCode, message: str
) -> None:
    result = invoke("enqueue", *args, "--", "python", "train.py")
    assert result.exit_code == code
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert store.index.count() == 0


def test_retry_on_and_notify_are_recorded_and_shown_without_the_secret(
    cli_env: Repo, store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERNIGHT_NOTIFY", "mailto:lab@example.org")
    hook = "https://hooks.slack.com/services/T0/B0/SECRET"
    result = invoke(
        "enqueue", "--retries", "2", "--retry-on", "infra,oom", "--notify", hook,
        "--notify-metric", "-acc:max", "--", "python", "train.py",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = store.get(result.stdout.strip())
    assert record.options.retry_on == ("infra", "oom")
    assert record.options.notify == ("mailto:lab@example.org", hook)
    assert record.options.notify_metric == "-acc:max"
    shown = invoke("show", record.id)
    assert "notify:       mailto:lab@example.org https://hooks.slack.com/… (best by -acc:max)" in (
        shown.stdout
    )
    assert "retries=2 (run again after infra,oom failures)" in shown.stdout
    as_json = invoke("show", "--json", record.id).stdout
    assert "SECRET" not in shown.stdout and "SECRET" not in as_json
    assert json.loads(as_json)["options"]["notify"] == [
        "mailto:lab@example.org",
        "https://hooks.slack.com/…",
    ]
    plain = invoke("enqueue", "--", "python", "train.py")
    assert store.get(plain.stdout.strip()).options.retry_on == ("infra",)


def test_unknown_options_before_the_command_are_refused(cli_env: Repo, store: TaskStore) -> None:
    result = invoke("enqueue", "--gpu", "0", "-q", "gpu", "-m", "typo", "--", "python", "train.py")
    assert result.exit_code == ExitCode.USAGE
    [line] = result.stderr.strip().splitlines()
    assert "unknown option --gpu (did you mean --gpus?)" in line and "after --" in line
    assert (
        "unknown option -gpu (did you mean --gpus?)"
        in invoke("enqueue", "-gpu", "0", "--", "python", "train.py").stderr
    )
    assert store.index.count() == 0
    passed = invoke("enqueue", "-q", "gpu", "--", "python", "train.py", "--gpu", "0", "--", "-x")
    assert passed.exit_code == 0, passed.output
    argv = ("python", "train.py", "--gpu", "0", "--", "-x")
    assert store.get(passed.stdout.strip()).argv == argv


_ARGPARSE_TRAIN = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--n-estimators", type=int, default=10)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--amp", action="store_true")
print(parser.parse_args())
"""


def test_sweep_names_must_be_params_of_the_command(cli_env: Repo, store: TaskStore) -> None:
    cli_env.write("fit.py", _ARGPARSE_TRAIN)
    cmd = ("--", "python", "fit.py", "--n-estimators", "10")
    bad = invoke("enqueue", "--sweep", "n_estimator=10,50", *cmd)
    assert bad.exit_code == ExitCode.USAGE and store.index.count() == 0
    assert "--sweep n_estimator: the command has no option n_estimator" in bad.stderr
    assert "closest: --n-estimators" in bad.stderr and "--add-param" in bad.stderr
    result = invoke(
        "enqueue", "--sweep", "n_estimators=20,50", "--sweep", "seed=1", "--sweep", "amp=true",
        *cmd,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [store.get(i).argv for i in result.stdout.split()] == [
        ("python", "fit.py", "--n-estimators", n, "--seed", "1", "--amp") for n in ("20", "50")
    ]
    added = invoke("enqueue", "--sweep", "depth=3", "--add-param", *cmd)
    assert store.get(added.stdout.strip()).argv[-2:] == ("--depth", "3")


def test_hydra_style_params_are_swept_in_place(cli_env: Repo, store: TaskStore) -> None:
    result = invoke("enqueue", "--sweep", "epochs=5,7", "--", "python", "train.py", "epochs=3")
    assert result.exit_code == 0, result.output
    records = [store.get(i) for i in result.stdout.split()]
    assert [r.argv for r in records] == [("python", "train.py", f"epochs={n}") for n in (5, 7)]
    assert records[0].params == {"epochs": "5"}


def test_command_without_dashes_and_empty_command(cli_env: Repo, store: TaskStore) -> None:
    result = invoke("enqueue", "-q", "gpu", "python", "train.py", "--gpus", "3")
    assert result.exit_code == 0, result.output
    record = store.get(result.stdout.strip())
    assert record.argv == ("python", "train.py", "--gpus", "3") and record.options.gpus == 1
    empty = invoke("enqueue", "-q", "gpu")
    assert empty.exit_code == ExitCode.USAGE and "no command to enqueue" in empty.stderr


def test_unreachable_redis(cli_env: Repo) -> None:
    url = f"redis://bob:hunter2@127.0.0.1:{free_port()}/0"
    result = invoke("enqueue", "--redis-url", url, "--", "python", "train.py")
    assert result.exit_code == ExitCode.CONNECTION
    [line] = result.stderr.strip().splitlines()
    assert "cannot reach Redis at redis://bob:***@127.0.0.1" in line and "hunter2" not in line


@pytest.mark.slow
def test_through_a_subprocess(cli_env: Repo, redis_url: str) -> None:
    proc = run_cli("enqueue", "-q", "cpu", "--", "python", "train.py", "--n", "3", cwd=cli_env.path)
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    listed = run_cli("ls", "--json", cwd=cli_env.path)
    assert [t["id"] for t in json.loads(listed.stdout)] == [task_id]
    down = run_cli("ls", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == ExitCode.CONNECTION
    assert down.stderr.startswith("overnight: error: cannot reach Redis at redis://127.0.0.1:")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "gpus"),
    [
        ([], {}, 0),  # the default queue is a CPU queue
        (["-q", "cpu-large"], {}, 0),
        (["-q", "gpu"], {}, 1),
        (["-q", "gpu", "--gpus", "0"], {}, 0),
        (["-q", "batch"], {"OVERNIGHT_CPU_QUEUES": "batch,etl"}, 0),
        (["-q", "cpu"], {"OVERNIGHT_DEFAULT_GPUS": "2"}, 2),
    ],
)
def test_gpus_default_by_queue(
    cli_env: Repo,
    store: TaskStore,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    gpus: int,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = invoke("enqueue", *args, "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    assert store.get(result.stdout.strip()).options.gpus == gpus


def test_tls_user_and_unix_socket_urls(cli_env: Repo, secured_redis: SecuredRedis) -> None:
    """rediss://user:pass@ to enqueue, unix:// to list: the same Redis, reached both ways."""
    result = invoke("enqueue", "--redis-url", secured_redis.user_url(), "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    listed = invoke("ls", "--json", "--redis-url", secured_redis.unix_url)
    assert [t["id"] for t in json.loads(listed.stdout)] == [task_id]
    bad = invoke("ls", "--redis-url", secured_redis.user_url("not-the-password"))
    assert bad.exit_code == ExitCode.CONNECTION
    assert "refused the credentials" in bad.stderr and "not-the-password" not in bad.stderr


def test_no_laptop_secret_reaches_redis(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env.write(
        "requirements.txt",
        "--extra-index-url https://ada:hunter2@pypi.lab.example/simple\n"
        "pkg @ git+https://ghp_tok3n@github.com/org/pkg.git\n",
    )
    cli_env.commit("requirements")
    unpushed = invoke("enqueue", "--", "python", "train.py")
    assert "requirements.txt holds a password in a URL in unpushed commits" in unpushed.stderr
    cli_env.push()  # now in the remote: neither in the task's patch nor in a bundle
    cli_env.write("train.py", "print('local change')\n")
    monkeypatch.setenv("DATABASE_URL", "postgres://app:s3cr3t@db.example/prod")
    refused = invoke("enqueue", "--env", "DATABASE_URL", "--", "python", "train.py")
    assert refused.exit_code == ExitCode.SNAPSHOT
    assert "DATABASE_URL looks like a secret (its value holds a password in a URL)" in (
        refused.stderr
    )
    cli_env.write(".env", "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz\n")
    refused = invoke("enqueue", "--", "python", "train.py")
    assert refused.exit_code == ExitCode.SNAPSHOT
    [line] = refused.stderr.strip().splitlines()
    assert "untracked file .env looks like a secret" in line and "--allow-secret-files" in line
    assert store.index.count() == 0
    cli_env.write(".gitignore", ".env\n")
    result = invoke("enqueue", "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    stored = b"".join(
        redis_client.dump(key) or b"" for key in redis_client.keys("*")
    )  # every value, whatever its type
    for secret in (b"hunter2", b"ghp_tok3n", b"s3cr3t", b"hf_abc"):
        assert secret not in stored
    assert (
        "pypi.lab.example/simple"
        in store.load_snapshot(result.stdout.strip()).spec.requirements.text
    )


def test_enqueue_imports_none_of_the_libraries_it_does_not_use(
    cli_env: Repo, store: TaskStore
) -> None:
    # Every import costs each enqueue its time (RQ some 30 ms, rich 17): only what it needs.
    code = (
        "import sys\n"
        "from overnight.cli import cli\n"
        "try:\n"
        "    cli(['enqueue', '--', 'python', 'train.py'], prog_name='overnight')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(' '.join(sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cli_env.path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert store.get(proc.stdout.strip()).status is TaskStatus.QUEUED
    unused = ("rq", "docker", "psutil", "pynvml", "rich", "git", "fsspec", "paramiko")
    loaded = proc.stderr.split()
    assert [m for m in loaded if m.split(".")[0] in unused or m.startswith("overnight.agent")] == []


def test_enqueue_records_metrics_files_and_refuses_one_outside_the_tree(
    cli_env: Repo, store: TaskStore
) -> None:
    result = invoke(
        "enqueue", "--metrics", "./outputs/metrics.csv", "--metrics", "logs//m.jsonl",
        "--metrics", "outputs/metrics.csv", "--", "python", "train.py",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = store.load_snapshot(result.stdout.strip()).spec
    assert spec.metric_files == ("outputs/metrics.csv", "logs/m.jsonl")
    shown = invoke("show", result.stdout.strip()).stdout
    assert "metrics from: outputs/metrics.csv logs/m.jsonl" in shown
    for path in ("../elsewhere.csv", "/etc/metrics.csv", ".git/m.csv"):
        refused = invoke("enqueue", "--metrics", path, "--", "python", "train.py")
        assert refused.exit_code == ExitCode.SNAPSHOT, path
        assert f"--metrics {path!r} cannot be read" in refused.stderr
        assert "outputs/metrics.csv" in refused.stderr and "\n" not in refused.stderr.strip()


def test_enqueue_gives_an_account_on_stderr_and_ids_alone_on_stdout(
    cli_env: Repo, store: TaskStore
) -> None:
    cli_env.write(".gitignore", "data/\n")
    cli_env.write("exp/requirements.txt", "scikit-learn==1.5.0\n")
    cli_env.write("exp/simple.py", "import sklearn\n")
    cli_env.write("requirements.txt", "jupyterlab\n")
    cli_env.commit("two projects")
    cli_env.push()
    cli_env.write("data/train.csv", "a,b\n")
    cli_env.write("notes.txt", "n\n")
    result = invoke("enqueue", "--sweep", "lr=1,2", "--", "python", "exp/simple.py", "--lr", "0")
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 2 and all(store.get(i) for i in ids)
    commit = cli_env.git("rev-parse", "HEAD")[:10]
    account, sweep = result.stderr.splitlines()
    assert re.fullmatch(r"sweep ([0-9a-f]{12}): 2 task\(s\); overnight summary --sweep \1", sweep)
    assert account.startswith(f"overnight: recorded {commit} on main; uncommitted: 1 file, patch")
    assert account.endswith(
        "untracked recorded: notes.txt; ignored, left out: 1 (data/); "
        "requirements: exp/requirements.txt"
    )
    spec = store.load_snapshot(ids[0]).spec
    assert (spec.requirements.path, spec.requirements.text) == (
        "exp/requirements.txt",
        "scikit-learn==1.5.0\n",
    )
    quiet = invoke("enqueue", "--quiet", "--", "python", "exp/simple.py")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and len(quiet.stdout.split()) == 1


def test_files_the_worker_will_not_have_are_named_at_enqueue(
    cli_env: Repo, store: TaskStore
) -> None:
    cli_env.write(".gitignore", "data/\n")
    cli_env.write("requirements.txt", "numpy\n")
    cli_env.commit("ignore data")
    cli_env.push()
    cli_env.write("data/train.csv", "a,b\n")
    result = invoke(
        "enqueue", "--quiet", "--", "python", "train.py", "--data", "data/train.csv",
        "--cache", "~/cache", "--ref", "/srv/lab/ref.npz",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert store.get(result.stdout.strip()).status is TaskStatus.QUEUED
    assert [line.split(",")[0] for line in result.stderr.splitlines()] == [
        "overnight: warning: the command names data/train.csv",
        "overnight: warning: the command names ~/cache: ~ is the home folder of whoever runs it",
        "overnight: warning: the command names /srv/lab/ref.npz",
    ]


def test_a_missing_script_is_refused_before_anything_is_queued(
    cli_env: Repo, store: TaskStore
) -> None:
    result = invoke("enqueue", "--sweep", "lr=1,2", "--", "python", "trian.py", "--lr", "0")
    assert result.exit_code == ExitCode.SNAPSHOT
    assert result.stderr == (
        "overnight: error: the command's script trian.py does not exist in the repository root "
        "(where the command runs); did you mean train.py?\n"
    )
    assert result.stdout == "" and store.index.count() == 0


def test_a_freeze_is_said_in_one_line(cli_env: Repo, store: TaskStore) -> None:
    result = invoke("enqueue", "--quiet", "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    line, *others = result.stderr.splitlines()  # others: packages of this machine's Python
    assert all("installed from local paths" in other for other in others), others
    assert line.startswith(
        "overnight: warning: no requirements file from the repository root (requirements.txt, "
    )
    assert store.load_snapshot(result.stdout.strip()).spec.requirements.source == "freeze"


def test_an_interpreter_path_is_recorded_as_python_and_said_on_stderr(
    cli_env: Repo, store: TaskStore
) -> None:
    result = invoke("enqueue", "--", sys.executable, "train.py")
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    assert store.get(task_id).argv == ("python", "train.py")
    assert result.stderr.startswith(f"overnight: the command's interpreter {sys.executable} is ")
    assert "task's own environment" in result.stderr
