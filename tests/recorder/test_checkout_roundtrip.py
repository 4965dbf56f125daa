"""Property: any working tree, snapshotted and rebuilt, comes back exactly (real git, temp dirs),
under ``.gitattributes`` conversions too."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.gitrepo import Repo, assert_round_trip, git, make_repo, worktree_state

pytestmark = pytest.mark.slow

NAMES = (
    "a.txt",
    "with space.txt",
    "ünï cødé.txt",
    "模型.py",
    'quote"d.txt',
    "tab\there.txt",
    "-dash.md",
    "data/blob.bin",
    "data/deep/x.py",
    "src/pkg/__init__.py",
)
NEW_NAMES = (
    "new/folder/ü file.txt",
    "new/folder/bin.dat",
    "another/new/deep/x",
    "fresh.txt",
    "data/added.bin",
)
RENAMED = ("renamed/one.txt", "renamed/two ü.bin", "moved.txt")
LINKS = ("link-to-a", "data/link", "new/dangling")

ATTRIBUTES = (
    None,
    "* text=auto\n",
    "* text=auto eol=crlf\n",
    "*.txt text eol=crlf\n*.bin -text\n*.md eol=lf\n",
    "*.py ident\n*.txt text\n",
)
"""The ``.gitattributes`` a repo starts with: none, or conversions a checkout applies."""

text_lines = st.lists(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20), max_size=5
)
contents = st.one_of(
    st.binary(max_size=300),  # NUL bytes and invalid UTF-8 included
    text_lines.map(lambda ls: "\r\n".join(ls).encode()),  # CRLF
    text_lines.map(lambda ls: "\n".join(ls).encode()),
    st.just(b""),
)


def _write(repo: Repo, rel: str, data: bytes, executable: bool = False) -> None:
    target = repo.path / rel
    if target.is_symlink():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(0o755 if executable else 0o644)


def _files(repo: Repo) -> list[str]:
    return sorted(
        p.relative_to(repo.path).as_posix()
        for p in repo.path.rglob("*")
        if ".git" not in p.relative_to(repo.path).parts
        and (p.is_file() or p.is_symlink())
        and p.name != ".gitignore"
    )


def _mutate(repo: Repo, data: st.DataObject) -> None:
    """One working-tree change, staged or not."""
    files = _files(repo)
    kind = data.draw(
        st.sampled_from(
            [
                "modify",
                "stage_then_edit",
                "delete",
                "git_rm",
                "rename",
                "git_mv",
                "chmod",
                "add",
                "link",
                "typechange",
            ]
        )
    )
    if kind in ("add", "link") or not files:
        rel = (
            data.draw(st.sampled_from(NEW_NAMES + NAMES))
            if kind != "link"
            else data.draw(st.sampled_from(LINKS))
        )
        if (repo.path / rel).exists() or (repo.path / rel).is_symlink():
            return
        if kind == "link":
            (repo.path / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(
                data.draw(st.sampled_from(["../a.txt", "a.txt", "missing/target", "data"])),
                repo.path / rel,
            )
        else:
            _write(repo, rel, data.draw(contents), data.draw(st.booleans()))
        if data.draw(st.booleans()):
            repo.git("add", "--", rel)
        return
    rel = data.draw(st.sampled_from(files))
    path = repo.path / rel
    regular = path.is_file() and not path.is_symlink()
    if kind == "modify" and regular:
        _write(repo, rel, data.draw(contents), os.access(path, os.X_OK))
    elif kind == "stage_then_edit" and regular:
        _write(repo, rel, data.draw(contents))
        repo.git("add", "--", rel)
        _write(repo, rel, data.draw(contents))
    elif kind == "delete":
        path.unlink()
    elif kind == "git_rm" and repo.git("ls-files", "--", rel):
        repo.git("rm", "-q", "-f", "--", rel)
    elif kind in ("rename", "git_mv"):
        new = repo.path / data.draw(st.sampled_from(RENAMED))
        if new.exists() or new.is_symlink():
            return
        new.parent.mkdir(parents=True, exist_ok=True)
        tracked = bool(repo.git("ls-files", "--", rel))
        if kind == "git_mv" and tracked:
            repo.git("mv", "--", rel, str(new.relative_to(repo.path)))
        else:
            path.rename(new)
    elif kind == "chmod" and regular:
        path.chmod(0o644 if os.access(path, os.X_OK) else 0o755)
    elif kind == "typechange" and regular:
        path.unlink()
        os.symlink("a.txt", path)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_working_tree_round_trips_exactly(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="overnight-prop-") as tmp:
        base = Path(tmp)
        repo = make_repo(base, with_origin=data.draw(st.booleans(), label="remote"))
        initial = data.draw(
            st.dictionaries(st.sampled_from(NAMES), contents, min_size=1, max_size=6)
        )
        for rel, content in initial.items():
            _write(repo, rel, content, data.draw(st.booleans()))
        attributes = data.draw(st.sampled_from(ATTRIBUTES), label="attributes")
        if attributes is not None:
            repo.write(".gitattributes", attributes)
        repo.write(".gitignore", "*.log\nbuild/\n")
        repo.commit("files")
        if repo.origin is not None:
            repo.push()
        for i in range(data.draw(st.integers(0, 3), label="unpushed")):
            for _ in range(data.draw(st.integers(1, 2))):
                _mutate(repo, data)
            repo.commit(f"unpushed {i}")
        for _ in range(data.draw(st.integers(0, 8), label="changes")):
            _mutate(repo, data)
        if attributes is not None and not (repo.path / ".gitattributes").exists():
            # git's stat cache still vouches for files cleaned under the removed attributes
            # (git status calls them unchanged), and overnight trusts it there: a new mtime
            # makes git look at them again.
            for rel in _files(repo):
                if not (repo.path / rel).is_symlink():
                    os.utime(repo.path / rel, (time.time() + 5, time.time() + 5))
        repo.write("train.log", "ignored\n")
        repo.write("build/out.bin", b"\x00ignored")
        snap = assert_round_trip(repo.path, base / "rebuilt")
        assert not (base / "rebuilt" / "train.log").exists()
        assert not (base / "rebuilt" / "build").exists()
        # Clean: the working tree holds what HEAD holds (the index may differ: a file added,
        # then deleted, leaves the tree as HEAD has it).
        head = base / "head"
        git(base, "clone", "-q", "--no-local", str(repo.path), str(head))
        git(head, "checkout", "-q", repo.git("rev-parse", "HEAD").strip())
        clean = worktree_state(repo.path) == worktree_state(head)
        if attributes is None:  # else a checkout of HEAD may convert what git calls unchanged
            assert snap.spec.repo.dirty is not clean
        assert (snap.spec.bundle is not None) is (
            repo.origin is None
            or repo.git("rev-list", "--count", "HEAD", "--not", "--remotes=origin").strip() != "0"
        )
