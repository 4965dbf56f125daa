"""Trees under ``.gitattributes`` conversions come back byte for byte (real git, temp dirs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from overnight.errors import ReconstructError, SpecError
from overnight.recorder import conversions
from overnight.recorder.checkout import reconstruct
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import BlobRef, Snapshot
from tests.fixtures.gitrepo import Repo, assert_round_trip, count_git_commands, worktree_state

ARGV = ["python", "train.py"]


def _checked_out_again(repo: Repo) -> None:
    """Check every file out anew, as a fresh clone would write them under the attributes."""
    repo.git("rm", "-q", "--cached", "-r", ".")
    repo.git("reset", "-q", "--hard")


def _crlf_everywhere(repo: Repo) -> None:
    repo.write(".gitattributes", "* text=auto eol=crlf\n")
    repo.write("notes.txt", "one\r\ntwo\r\n")
    repo.commit("CRLF in the working tree")
    _checked_out_again(repo)
    repo.write("notes.txt", "one\r\ntwo\r\nthree\r\n")  # the uncommitted change
    repo.write("added-on-linux.txt", "LF only\n")  # untracked, not as a checkout writes it
    repo.write("added.txt", "CRLF\r\n")


def _text_auto_with_crlf_files(repo: Repo) -> None:
    repo.write(".gitattributes", "* text=auto\n")
    repo.write("windows.txt", "a\r\nb\r\n")  # stored as LF, kept as CRLF here
    repo.commit("normalised")
    repo.write("untracked.txt", "x\r\ny\r\n")
    repo.write("mixed.txt", "x\r\ny\n")


def _ident(repo: Repo) -> None:
    repo.write(".gitattributes", "*.py ident\n")
    repo.write("versioned.py", "# $Id$\n")
    repo.commit("ident")
    repo.write("new.py", "# $Id$\n")


def _attributes_added_uncommitted(repo: Repo) -> None:
    repo.write("data.txt", "lf\n")
    repo.commit("no attributes yet")
    repo.write(".gitattributes", "*.txt eol=crlf\n")
    repo.write("other.txt", "lf\n")


def _binary_and_minus_text(repo: Repo) -> None:
    repo.write(".gitattributes", "* text=auto\n*.dat -text\n")
    repo.write("raw.dat", b"a\r\nb\r\n")
    repo.write("blob.bin", b"\x00\r\n\x01\r\n")
    repo.commit("binary")
    repo.write("raw2.dat", b"c\r\n")


def _crlf_files_without_attributes(repo: Repo) -> None:
    repo.write("windows.txt", "a\r\nb\r\n")
    repo.commit("CRLF, no attributes")
    repo.write("windows.txt", "a\r\nb\r\nc\r\n")


def _autocrlf(repo: Repo) -> None:
    repo.git("config", "core.autocrlf", "true")
    repo.write("w.txt", "a\r\nb\r\n")
    repo.commit("autocrlf")
    repo.write("w.txt", "a\r\nb\r\nc\r\n")
    repo.write("lf.txt", "lf\n")


def _attributes_removed(repo: Repo) -> None:
    repo.write(".gitattributes", "* text=auto eol=crlf\n")
    repo.commit("attributes")  # the files here keep LF: they were not checked out again
    repo.git("rm", "-q", ".gitattributes")


def _info_attributes(repo: Repo) -> None:
    (repo.path / ".git" / "info").mkdir(exist_ok=True)
    (repo.path / ".git" / "info" / "attributes").write_text("* text\n")
    repo.write("windows.txt", "a\r\nb\r\n")  # git add stores LF: no agent has this file
    repo.commit("normalised by info/attributes")


def _users_attributes_file(repo: Repo) -> None:
    attributes = repo.path.parent / "my-attributes"
    attributes.write_text("* text eol=crlf\n")
    repo.git("config", "core.attributesFile", str(attributes))
    repo.write("windows.txt", "a\r\nb\r\n")
    repo.commit("normalised by the user's attributes file")
    repo.write("lf.txt", "lf\n")


def _attributes_renamed(repo: Repo) -> None:
    repo.write(".gitattributes", "* text=auto eol=crlf\n")
    repo.commit("attributes")
    (repo.path / ".gitattributes").rename(repo.path / "attributes.txt")  # a rename in the patch


def _attributes_narrowed(repo: Repo) -> None:
    repo.write(".gitattributes", "*.md text\n*.txt text\n")
    repo.write("notes.md", "a\r\nb\r\n")  # stored as LF
    repo.write("tab\there.txt", "x\r\n")
    repo.commit("normalised")
    repo.write(".gitattributes", "*.txt text\n")  # git's stat cache still vouches for notes.md


SCENES: dict[str, Callable[[Repo], None]] = {
    "text=auto eol=crlf": _crlf_everywhere,
    "text=auto, CRLF files": _text_auto_with_crlf_files,
    "ident": _ident,
    "attributes added, uncommitted": _attributes_added_uncommitted,
    "attributes removed, uncommitted": _attributes_removed,
    "attributes renamed, uncommitted": _attributes_renamed,
    "attributes narrowed, uncommitted": _attributes_narrowed,
    "info/attributes": _info_attributes,
    "core.attributesFile": _users_attributes_file,
    "-text and binary": _binary_and_minus_text,
    "CRLF files, no attributes": _crlf_files_without_attributes,
    "core.autocrlf=true": _autocrlf,
}


@pytest.mark.parametrize("scene", SCENES)
def test_the_rebuilt_tree_has_the_laptops_bytes(repo: Repo, tmp_path: Path, scene: str) -> None:
    SCENES[scene](repo)
    assert_round_trip(repo.path, tmp_path / "rebuilt")  # bytes of every file, untracked too


def test_only_files_a_checkout_would_change_travel_and_the_task_sees_them_unmodified(
    repo: Repo, tmp_path: Path
) -> None:
    _text_auto_with_crlf_files(repo)
    repo.write("plain.txt", "lf\n")
    snap = take_snapshot(repo.path, ARGV, SnapshotOptions())
    data = snap.blob(snap.spec.literal_files)
    assert data is not None
    assert sorted(conversions.decode(data)) == ["mixed.txt", "untracked.txt", "windows.txt"]
    dest = tmp_path / "rebuilt"
    reconstruct(Snapshot.from_json(snap.to_json()), dest)
    status = Git(dest).text("status", "--porcelain")
    assert status.splitlines() == Git(repo.path).text("status", "--porcelain").splitlines()


def test_a_tree_a_checkout_reproduces_carries_no_literal_files(repo: Repo) -> None:
    repo.write(".gitattributes", "* text=auto\n")
    repo.write("notes.txt", "lf\n")
    repo.commit("attributes, LF files")
    assert take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.literal_files is None


def test_files_under_a_filter_driver_are_left_to_it(repo: Repo) -> None:
    # As git-lfs: the blob is a pointer, the file here is the model it points to.
    repo.git("config", "filter.pointer.clean", "sh -c 'cat >/dev/null; echo pointer'")
    repo.git("config", "filter.pointer.smudge", "cat")
    repo.write(".gitattributes", "*.safetensors filter=pointer -text\n")
    repo.write("model.safetensors", b"\x00" * 4096)
    repo.commit("a model behind a filter")
    repo.push()
    assert repo.git("cat-file", "-p", "HEAD:model.safetensors") == "pointer\n"
    snap = take_snapshot(repo.path, ARGV, SnapshotOptions())
    assert snap.spec.literal_files is None and not snap.spec.repo.dirty


def test_the_agents_own_attributes_and_eol_change_nothing(
    repo: Repo, tmp_path: Path, _isolated_git_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _text_auto_with_crlf_files(repo)
    snap = Snapshot.from_json(take_snapshot(repo.path, ARGV, SnapshotOptions()).to_json())
    agents = tmp_path / "agent-attributes"
    agents.write_text("* text eol=crlf ident\n")
    with _isolated_git_config.open("a") as cfg:
        cfg.write(f"[core]\n\tattributesFile = {agents}\n\teol = crlf\n\tautocrlf = true\n")
    reconstruct(snap, tmp_path / "rebuilt")
    assert worktree_state(tmp_path / "rebuilt") == worktree_state(repo.path)


def test_the_repos_info_attributes_do_not_mislead_the_prediction(
    repo: Repo, tmp_path: Path
) -> None:
    _crlf_everywhere(repo)
    (repo.path / ".git" / "info").mkdir(exist_ok=True)
    (repo.path / ".git" / "info" / "attributes").write_text("* -text\n")
    assert_round_trip(repo.path, tmp_path / "rebuilt")


def test_attributes_cost_a_listing_and_a_check_and_a_checkout_only_to_smudge(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write(".gitattributes", "*.txt text\n")
    repo.write("notes.txt", "lf\n")
    repo.commit("attributes")
    repo.push()
    commands = count_git_commands(monkeypatch)
    take_snapshot(repo.path, ARGV, SnapshotOptions())
    clean = ["rev-parse", "remote", "rev-list", "rev-parse", "ls-files", "add", "write-tree"]
    assert commands == [*clean, "ls-tree", "check-attr"]
    repo.write(".gitattributes", "*.txt text eol=crlf\n")
    repo.commit("smudged")
    repo.push()
    commands.clear()
    take_snapshot(repo.path, ARGV, SnapshotOptions())
    assert commands == [*clean, "ls-tree", "check-attr", "checkout-index"]


def _aimed(snap: Snapshot, files: dict[str, bytes]) -> Snapshot:
    data = conversions.encode(files)
    ref = BlobRef.of(data)
    spec = dataclasses.replace(snap.spec, literal_files=ref)
    return Snapshot(spec=spec, blobs={**snap.blobs, ref.sha256: data})


@pytest.mark.parametrize("target", ["link", "folder-link/file.txt", "missing.txt", "folder"])
def test_literal_files_never_write_through_links_or_outside_the_tree(
    repo: Repo, tmp_path: Path, target: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file.txt").write_text("canary\n")
    (repo.path / "link").symlink_to(outside / "file.txt")
    (repo.path / "folder-link").symlink_to(outside)
    repo.write("folder/inside.txt", "x\n")
    repo.commit("links")
    repo.push()
    snap = _aimed(take_snapshot(repo.path, ARGV, SnapshotOptions()), {target: b"pwned\n"})
    with pytest.raises(ReconstructError, match=rf"'literal_files' names '{target}', which is not"):
        reconstruct(Snapshot.from_json(snap.to_json()), tmp_path / "rebuilt")
    assert (outside / "file.txt").read_text() == "canary\n"
    assert not (tmp_path / "rebuilt").exists()


@pytest.mark.parametrize("path", ["../escape.txt", ".git/config", "/etc/passwd"])
def test_literal_file_paths_that_leave_the_tree_are_refused(repo: Repo, path: str) -> None:
    with pytest.raises(SpecError, match="literal_files"):
        conversions.decode(conversions.encode({path: b"x"}))


def test_a_literal_files_blob_that_is_not_overnights_is_refused() -> None:
    with pytest.raises(SpecError, match="not a JSON object of path -> base64"):
        conversions.decode(b'{"files": {"a.txt": "not base64!"}}')
