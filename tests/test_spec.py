from __future__ import annotations

import json

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
