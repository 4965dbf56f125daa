"""``overnight compare``: runs enqueued through the real enqueue path, from a real repo with a
bare origin, compared from what the queue stored."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from overnight.commands.compare import pair_lines
from overnight.comparison.codediff import CodeDiff, Commits, FileChange
from overnight.comparison.report import Pair
from overnight.errors import ExitCode
from overnight.metrics.summary import MetricSummary
from overnight.queue import keys
from overnight.queue.records import Change, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import invoke

pytestmark = pytest.mark.slow  # real repos, snapshots and git in every test

BINARY = b"\x00\x01\x02png\xff"
TRAIN_A = "import sys\nprint('args', sys.argv[1:])\nLAYERS = 2\n"
TRAIN_B = "import sys\nprint('args', sys.argv[1:])\nLAYERS = 4\n"
README_A, README_B = "# example\n", "# example\nA model.\n"
NOTES = "try a smaller lr\n"
REQS_A, REQS_B = "numpy==1.26.4\n", "numpy==1.26.4\ntorch==2.3.0\n"


def blob(content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return (
        subprocess.run(
            ["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )


def enqueue(*args: str) -> str:
    result = invoke("enqueue", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture
def two_runs(cli_env: Repo) -> tuple[str, str]:
    """A: pushed commit, train.py edited. B: an unpushed commit (README), train.py edited
    otherwise, requirements changed, an untracked text file and an untracked binary file,
    another lr, note, tag and env variable."""
    repo = cli_env
    repo.write("requirements.txt", REQS_A)
    repo.commit("requirements")
    repo.push()
    repo.write("train.py", TRAIN_A)
    a = enqueue("-m", "baseline", "--tag", "a", "--", "python", "train.py", "--lr", "0.1")
    repo.git("checkout", "-q", "--", "train.py")
    repo.write("README.md", README_B)
    repo.commit("Describe the model")
    repo.write("train.py", TRAIN_B)
    repo.write("requirements.txt", REQS_B)
    repo.write("notes.txt", NOTES)
    repo.write("data.bin", BINARY)
    b = enqueue(
        "-m", "bigger", "--tag", "b", "--env", "SEED=3", "--",
        "python", "train.py", "--lr", "0.01",
    )  # fmt: skip
    return a, b


def expected_diff() -> str:
    zero = "0" * 40
    return (
        "diff --git a/README.md b/README.md\n"
        f"index {blob(README_A)}..{blob(README_B)} 100644\n"
        "--- a/README.md\n"
        "+++ b/README.md\n"
        "@@ -1 +1,2 @@\n"
        " # example\n"
        "+A model.\n"
        "diff --git a/data.bin b/data.bin\n"
        "new file mode 100644\n"
        f"index {zero}..{blob(BINARY)}\n"
        "Binary files /dev/null and b/data.bin differ\n"
        "diff --git a/notes.txt b/notes.txt\n"
        "new file mode 100644\n"
        f"index {zero}..{blob(NOTES)}\n"
        "--- /dev/null\n"
        "+++ b/notes.txt\n"
        "@@ -0,0 +1 @@\n"
        "+try a smaller lr\n"
        "diff --git a/requirements.txt b/requirements.txt\n"
        f"index {blob(REQS_A)}..{blob(REQS_B)} 100644\n"
        "--- a/requirements.txt\n"
        "+++ b/requirements.txt\n"
        "@@ -1 +1,2 @@\n"
        " numpy==1.26.4\n"
        "+torch==2.3.0\n"
        "diff --git a/train.py b/train.py\n"
        f"index {blob(TRAIN_A)}..{blob(TRAIN_B)} 100644\n"
        "--- a/train.py\n"
        "+++ b/train.py\n"
        "@@ -1,3 +1,3 @@\n"
        " import sys\n"
        " print('args', sys.argv[1:])\n"
        "-LAYERS = 2\n"
        "+LAYERS = 4\n"
    )


def test_compare_json_has_the_exact_diff_and_the_fields(two_runs: tuple[str, str]) -> None:
    a, b = two_runs
    result = invoke("compare", a, b, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tasks"] == [a, b]
    [pair] = data["pairs"]
    assert (pair["base"], pair["other"], pair["changed"]) == (a, b, True)
    assert pair["diff"] == expected_diff()
    assert pair["commits"]["ahead"] == 1 and pair["commits"]["behind"] == 0
    assert [s.split(" ", 1)[1] for s in pair["commits"]["subjects"]] == ["Describe the model"]
    assert [(f["path"], f["added"], f["deleted"], f["binary"]) for f in pair["files"]] == [
        ("README.md", 1, 0, False),
        ("data.bin", None, None, True),
        ("notes.txt", 1, 0, False),
        ("requirements.txt", 1, 0, False),
        ("train.py", 1, 1, False),
    ]
    assert pair["requirements_diff"] == (
        f"--- {a}/requirements\n+++ {b}/requirements\n@@ -1 +1,2 @@\n numpy==1.26.4\n"
        "+torch==2.3.0\n"
    )
    fields = {(f["section"], f["field"]): f for f in data["fields"]}
    assert fields["params", "lr"]["values"] == {a: "0.1", b: "0.01"}
    assert fields["run", "note"]["values"] == {a: "baseline", b: "bigger"}
    assert fields["run", "tags"]["values"] == {a: "a", b: "b"}
    assert fields["environment", "env"]["values"] == {a: "", b: "SEED"}
    assert fields["environment", "requirements"]["values"] == {
        a: "requirements.txt, 1 line",
        b: "requirements.txt, 2 lines",
    }
    assert fields["environment", "python"]["changed"] is False
    assert fields["run", "command"]["values"][b] == "python train.py --lr 0.01"


def test_compare_prints_the_table_then_the_diff(two_runs: tuple[str, str]) -> None:
    a, b = two_runs
    result = invoke("compare", a, b)
    assert result.exit_code == 0, result.output
    out = result.stdout
    table, _, rest = out.partition(f"\ncode of {b} against {a}: ")
    assert "param lr" in table and "0.01" in table and "baseline" in table
    headline, _, body = rest.partition("\n")
    assert headline.endswith(
        "(1 ahead, 0 behind); 5 files changed, 4 insertions(+), 1 deletions(-)"
    )
    subject, _, body = body.partition("\n")
    assert subject.endswith(" Describe the model")
    assert body == expected_diff()  # no color in a pipe; requirements.txt is in the diff
    assert "\n    image " not in table  # no run has one


def test_stat_lists_the_files_only(two_runs: tuple[str, str]) -> None:
    a, b = two_runs
    result = invoke("compare", "--stat", a, b)
    assert result.exit_code == 0, result.output
    code = result.stdout.split(f"code of {b} against {a}: ", 1)[1]
    lines = code.splitlines()
    assert lines[2:] == [
        " README.md        | +1 -0",
        " data.bin         | binary",
        " notes.txt        | +1 -0",
        " requirements.txt | +1 -0",
        " train.py         | +1 -1",
    ]
    assert "diff --git" not in result.stdout
    data = json.loads(invoke("compare", "--stat", "--json", a, b).stdout)
    assert "diff" not in data["pairs"][0] and len(data["pairs"][0]["files"]) == 5


def test_only_changed_hides_equal_fields(two_runs: tuple[str, str]) -> None:
    a, b = two_runs
    out = invoke("compare", "--only-changed", a, b).stdout
    fields = [line.split()[1] for line in out.split("\ncode of ")[0].splitlines()[2:]]
    assert fields == [
        "command",
        "note",
        "tags",
        "param",
        "commit",
        "changes",
        "requirements",
        "env",
    ]


def test_runs_with_the_same_code_show_no_diff(cli_env: Repo, store: TaskStore) -> None:
    ids = invoke(
        "enqueue", "--sweep", "lr=0.1,0.2", "--", "python", "train.py", "--lr", "1"
    ).stdout.split()
    out = invoke("compare", *ids).stdout
    assert f"code of {ids[1]} against {ids[0]}: same commit" in out and "same tree" in out
    assert "diff --git" not in out
    only = invoke("compare", "--only-changed", *ids).stdout
    assert "code of" not in only and "param lr" in only


def test_a_sweep_is_compared_with_its_winner_first(
    cli_env: Repo, two_runs: tuple[str, str], store: TaskStore
) -> None:
    a, _ = two_runs
    ids = invoke(
        "enqueue", "--sweep", "lr=0.1,0.2,0.3", "--", "python", "train.py", "--lr", "1"
    ).stdout.split()
    for task_id, loss in zip(ids, (0.5, 0.25, 0.75), strict=True):
        store.transition(task_id, TaskStatus.RUNNING, Change(agent="box"))
        metrics = {"loss": MetricSummary.first(loss)}
        store.transition(task_id, TaskStatus.FINISHED, Change(exit_code=0, metrics=metrics))
    oldest = json.loads(invoke("compare", "--sweep", ids[2][:8], "--json").stdout)
    assert [(p["base"], p["other"]) for p in oldest["pairs"]] == [
        (ids[0], ids[1]),
        (ids[0], ids[2]),
    ]
    best = json.loads(invoke("compare", "--sweep", ids[0], "--sort", "loss", "--json").stdout)
    assert [p["other"] for p in best["pairs"]] == [ids[0], ids[2]]
    assert best["pairs"][0]["base"] == ids[1]  # the lowest loss is A
    against = json.loads(invoke("compare", a, "--sweep", ids[0], "--json").stdout)
    assert [p["other"] for p in against["pairs"]] == ids  # the task named first is A
    lonely = invoke("compare", "--sort", "loss", a)
    assert lonely.exit_code == ExitCode.USAGE and "give --sweep ID too" in lonely.stderr


def test_three_runs_are_each_compared_with_the_first(
    cli_env: Repo, two_runs: tuple[str, str], store: TaskStore
) -> None:
    a, b = two_runs
    cli_env.write("notes.txt", "third\n")
    c = enqueue("--", "python", "train.py", "--lr", "0.5")
    data = json.loads(invoke("compare", a, b, c, "--json").stdout)
    assert [(p["base"], p["other"]) for p in data["pairs"]] == [(a, b), (a, c)]
    lr = next(f for f in data["fields"] if f["field"] == "lr")
    assert lr["values"] == {a: "0.1", b: "0.01", c: "0.5"}
    assert "+third\n" in data["pairs"][1]["diff"] and "LAYERS = 4" in data["pairs"][1]["diff"]


def test_metrics_hardware_and_result_side_by_side(
    two_runs: tuple[str, str], store: TaskStore
) -> None:
    a, b = two_runs
    for task_id, loss, model in ((a, 0.5, "NVIDIA A100"), (b, 0.25, "NVIDIA H200")):
        store.transition(task_id, TaskStatus.PREPARING, Change(agent="box"))
        hardware = {"host": "box", "gpu_model": model, "gpu_count": 1, "driver_version": "550.1"}
        store.transition(task_id, TaskStatus.RUNNING, Change(extra={"hardware": hardware}))
        metrics = {"loss": MetricSummary(last=loss, min=loss, max=2.0, count=3, last_step=9,
                                         min_step=9, max_step=0)}  # fmt: skip
        store.transition(task_id, TaskStatus.FINISHED, Change(exit_code=0, metrics=metrics))
    data = json.loads(invoke("compare", a, b, "--json").stdout)
    fields = {(f["section"], f["field"]): f for f in data["fields"]}
    assert fields["metrics", "loss last"]["values"] == {a: "0.5 @ 9", b: "0.25 @ 9"}
    assert fields["metrics", "loss max"]["changed"] is False
    assert fields["hardware", "gpu"]["values"] == {a: "NVIDIA A100", b: "NVIDIA H200"}
    assert fields["hardware", "driver"]["values"] == {a: "550.1", b: "550.1"}
    assert fields["result", "exit code"]["values"] == {a: "0", b: "0"}
    assert data["metrics"][b]["loss"]["last"] == 0.25
    out = invoke("compare", "--only-changed", a, b).stdout
    assert "metric loss last" in out and "loss max" not in out


def test_compare_from_outside_the_repo_fetches_the_origin_and_unbundles(
    two_runs: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("OVERNIGHT_ALLOW_LOCAL_REPOS", "1")
    result = invoke("compare", a, b, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pairs"][0]["diff"] == expected_diff()
    assert "fetching commits from" in result.stderr
    assert list(elsewhere.iterdir()) == []  # no checkout left behind


def test_a_local_origin_is_fetched_only_when_allowed(
    two_runs: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OVERNIGHT_ALLOW_LOCAL_REPOS", "0")
    result = invoke("compare", *two_runs)
    assert result.exit_code == ExitCode.RECONSTRUCT
    assert "is a local path" in result.stderr and "OVERNIGHT_ALLOW_LOCAL_REPOS=1" in result.stderr


def test_unknown_ids_and_too_few_are_one_line_errors(two_runs: tuple[str, str]) -> None:
    a, _ = two_runs
    missing = invoke("compare", a, "ffffffff")
    assert missing.exit_code == ExitCode.NOT_FOUND and "ffffffff" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    alone = invoke("compare", a)
    assert alone.exit_code == ExitCode.USAGE and "at least two" in alone.stderr


def test_a_collected_snapshot_is_named(two_runs: tuple[str, str], store: TaskStore) -> None:
    a, b = two_runs
    spec = store.load_snapshot(b).spec
    assert spec.patch is not None
    store.redis.delete(keys.blob(spec.patch.sha256))
    result = invoke("compare", a, b)
    assert result.exit_code == ExitCode.QUEUE
    assert f"task {b} cannot be compared" in result.stderr and "gc" in result.stderr


def test_diff_lines_are_made_visible_and_colored_only_when_asked() -> None:
    text = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\x1b]0;title\x07\n+new\n"
    code = CodeDiff(
        "1" * 40, "2" * 40, Commits("3" * 40, "3" * 40), (FileChange("x", None, 1, 1),), text
    )
    pair = Pair("aaaa", "bbbb", code, "")
    plain = list(pair_lines(pair, stat_only=False, color=False))
    assert (
        plain[1]
        == "code of bbbb against aaaa: same commit 3333333; 1 file changed, 1 insertions(+), 1 deletions(-)"
    )
    assert plain[2:] == ["diff --git a/x b/x", "--- a/x", "+++ b/x", "@@ -1 +1 @@",
                         "-old\\x1b]0;title\\x07", "+new"]  # fmt: skip
    colored = list(pair_lines(pair, stat_only=False, color=True))
    assert colored[2] == "\x1b[1mdiff --git a/x b/x\x1b[0m"
    assert colored[3:5] == ["--- a/x", "+++ b/x"]
    assert colored[6] == "\x1b[31m-old\\x1b]0;title\\x07\x1b[0m"
    assert colored[7] == "\x1b[32m+new\x1b[0m"
