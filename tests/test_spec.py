from __future__ import annotations

import json
from typing import Any

import pytest

from overnight.errors import SpecError
from overnight.spec import SPEC_VERSION, BlobRef, RepoState, Requirements, Snapshot, TaskSpec


def _spec(**kw: object) -> TaskSpec:
    base: dict[str, object] = dict(
        repo=RepoState(commit="a" * 40, url="https://example.invalid/r.git", branch="main"),
        argv=("python", "train.py", "--lr", "0.1"),
        python="3.11.7",
        requirements=Requirements(
            source="requirements.txt", text="numpy==2.0\n", path="requirements.txt"
        ),
    )
    base.update(kw)
    return TaskSpec(**base)  # type: ignore[arg-type]


def test_spec_json_round_trip() -> None:
    spec = _spec(params={"lr": "0.1"}, tags=("a", "b"), env={"SEED": "1"})
    assert TaskSpec.from_json(spec.to_json()) == spec


def test_output_globs_round_trip_and_a_spec_without_them_reads_as_before() -> None:
    spec = _spec(outputs=("checkpoints/*.pt", "runs/**/metrics.json"))
    assert TaskSpec.from_json(spec.to_json()) == spec
    plain = _spec()
    assert "outputs" not in plain.to_dict()  # older agents read the same spec as before
    assert TaskSpec.from_dict(plain.to_dict()).outputs == ()


def test_metric_files_round_trip_and_a_spec_without_them_reads_as_before() -> None:
    spec = _spec(metric_files=("outputs/metrics.csv", "logs/m.jsonl"))
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert "metric_files" not in _spec().to_dict()


def test_snapshot_inlines_and_verifies_blobs() -> None:
    patch = b"diff --git a/x b/x\n\x00binary"
    spec = _spec(patch=BlobRef.of(patch))
    snap = Snapshot(spec=spec, blobs={spec.patch.sha256: patch})  # type: ignore[union-attr]
    again = Snapshot.from_json(snap.to_json())
    assert again == snap
    data = json.loads(snap.to_json())
    data["blobs"][spec.patch.sha256] = "aGVsbG8="  # type: ignore[union-attr]
    with pytest.raises(SpecError, match="does not match its sha256"):
        Snapshot.from_dict(data)


def test_newer_schema_is_refused_with_upgrade_hint() -> None:
    data = _spec().to_dict()
    data["version"] = SPEC_VERSION + 1
    with pytest.raises(SpecError, match="upgrade overnight"):
        TaskSpec.from_dict(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("argv"), "missing the field 'argv'"),
        (lambda d: d.update(argv=[]), "empty command"),
        (lambda d: d.update(argv="python x"), "list of strings"),
        (lambda d: d.update(env={"A": 1}), "object of strings"),
        (lambda d: d.pop("version"), "no integer 'version'"),
        (lambda d: d["repo"].update(commit="HEAD"), r"'repo\.commit' must be a git object id"),
        (lambda d: d["repo"].update(commit="--all"), r"'repo\.commit' must be a git object id"),
        (lambda d: d["repo"].update(commit="A" * 40), r"'repo\.commit' must be a git object id"),
        (lambda d: d["repo"].update(tree="abc"), r"'repo\.tree' must be a git object id"),
        (
            lambda d: d["repo"].update(submodules={"lib": "main"}),
            r"'repo\.submodules' at 'lib' must be a git object id",
        ),
        (
            lambda d: d.update(patch={"sha256": "../../etc/passwd", "size": 1}),
            r"'patch' must name its blob by sha256",
        ),
        (lambda d: d.update(bundle={"sha256": "F" * 64, "size": 1}), r"'bundle' must name"),
        (lambda d: d.update(patch={"sha256": "f" * 64, "size": -1}), r"'patch' has the size -1"),
        (lambda d: d.update(patch={"sha256": "f" * 64, "size": True}), r"'patch' has the size"),
        (lambda d: d.update(python="3.11; rm -rf /"), r"'python' is .*not a Python version"),
    ],
)
def test_malformed_specs_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _spec().to_dict()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        TaskSpec.from_dict(data)


def test_missing_blob_is_reported() -> None:
    spec = _spec(bundle=BlobRef(sha256="f" * 64, size=3))
    with pytest.raises(SpecError, match="lacks the blob"):
        Snapshot.from_dict(spec.to_dict())


BAD_PATHS = [
    ("/abs/path", "is absolute"),
    ("../x", "climbs out through '..'"),
    ("sub/../../x", "climbs out through '..'"),
    ("sub/..", "climbs out through '..'"),
    (".git/x", "reaches into a .git folder"),
    ("vendor/.GIT/config", "reaches into a .git folder"),
    ("a//b", "is not normalised"),
    ("./a", "is not normalised"),
    ("a/", "is not normalised"),
    ("", "is empty"),
    ("a\\..\\..\\x", "holds a backslash"),
    ("a\x00b", "holds a control character"),
    ("a\nb", "holds a control character"),
]


def _with_submodule(path: str) -> dict[str, Any]:
    data = _spec().to_dict()
    data["version"] = SPEC_VERSION
    data["submodule_patches"] = {path: {"sha256": "b" * 64, "size": 10}}
    data["repo"]["submodule_trees"] = {path: "c" * 40}
    return data


@pytest.mark.parametrize(("path", "cause"), BAD_PATHS)
def test_paths_that_leave_the_tree_are_refused_in_every_field(path: str, cause: str) -> None:
    def submodules(d: dict) -> None:  # type: ignore[type-arg]
        d["repo"]["submodules"] = {path: "d" * 40}

    def requirements(d: dict) -> None:  # type: ignore[type-arg]
        d["requirements"]["path"] = path

    def workdir(d: dict) -> None:  # type: ignore[type-arg]
        d["workdir"] = path

    def outputs(d: dict) -> None:  # type: ignore[type-arg]
        d["outputs"] = ["checkpoints/*.pt", path]

    def metric_files(d: dict) -> None:  # type: ignore[type-arg]
        d["metric_files"] = ["outputs/metrics.csv", path]

    cases = [("submodule_patches", _with_submodule(path))]
    for field, mutate in (
        ("repo.submodules", submodules),
        ("requirements.path", requirements),
        ("workdir", workdir),
        ("outputs", outputs),
        ("metric_files", metric_files),
    ):
        data = _spec().to_dict()
        mutate(data)
        cases.append((field, data))
    for field, data in cases:
        with pytest.raises(SpecError) as info:
            TaskSpec.from_dict(data)
        message = str(info.value)
        assert message.startswith(f"task spec field {field!r} names the path {path!r}, which ")
        assert cause in message and "\n" not in message


def test_a_submodule_tree_key_is_checked_even_without_its_patch() -> None:
    data = _spec().to_dict()
    data["repo"]["submodule_trees"] = {"../x": "c" * 40}
    with pytest.raises(SpecError, match=r"'repo\.submodule_trees' names the path '\.\./x'"):
        TaskSpec.from_dict(data)


@pytest.mark.parametrize(
    "path", ["vendor/lib", "-dash.md", "with space/ü 模型", ".github/x", "a/.gitmodules", "..a"]
)
def test_ordinary_paths_are_accepted(path: str) -> None:
    data = _with_submodule(path)
    data["workdir"] = path
    data["requirements"]["path"] = path
    spec = TaskSpec.from_dict(data)
    assert spec.workdir == path and set(spec.submodule_patches) == {path}


@pytest.mark.parametrize(
    "branch",
    ["--upload-pack=touch x", "-x", "bad..name", "a b", "x.lock", "a/.hidden", "HEAD", "@",
     "a@{1}", "a:b", "end.", "end/", "/start", "a//b", "tab\tname", "q?", "back\\slash", ""],
)  # fmt: skip
def test_branch_names_git_would_refuse_or_read_as_options_are_refused(branch: str) -> None:
    data = _spec().to_dict()
    data["repo"]["branch"] = branch
    with pytest.raises(SpecError, match=r"'repo\.branch' is .*not a valid git branch name"):
        TaskSpec.from_dict(data)


@pytest.mark.parametrize("branch", ["main", "feature/x-1", "ü/тест", "v1.2", "a@b", None])
def test_ordinary_branch_names_are_accepted(branch: str | None) -> None:
    data = _spec().to_dict()
    data["repo"]["branch"] = branch
    assert TaskSpec.from_dict(data).repo.branch == branch


def test_object_ids_of_sha256_repositories_and_prerelease_pythons_are_accepted() -> None:
    data = _spec().to_dict()
    data["repo"].update(commit="e" * 64, tree="f" * 64)
    data["python"] = "3.14.0a1+"
    spec = TaskSpec.from_dict(data)
    assert spec.repo.commit == "e" * 64 and spec.python == "3.14.0a1+"


@pytest.mark.parametrize("raw", [b"\x80\xff\x00 garbage", "{not json", b"{not json"])
def test_a_garbage_spec_is_reported_as_unreadable(raw: str | bytes) -> None:
    for load, what in ((TaskSpec.from_json, "task spec"), (Snapshot.from_json, "snapshot")):
        with pytest.raises(SpecError) as info:
            load(raw)
        message = str(info.value)
        assert message.startswith(f"{what} is unreadable: it is not "), message
        assert "codec" not in message and "utf-8" not in message, message
        assert "enqueue the task again" in message
