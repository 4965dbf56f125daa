from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from overnight.agent.workspace.locks import FileLock
from overnight.agent.workspace.workspaces import Workspaces, tree_key
from overnight.errors import PreparationCanceled, ReconstructError
from overnight.queue.records import Phase, TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import BlobRef, Snapshot
from tests.fixtures.agents import (
    agent_config,
    enqueue,
    log_text,
    make_project,
    run_burst,
    snapshot_of,
)
from tests.fixtures.escapes import aimed_at, change_of, make_canary
from tests.fixtures.gitrepo import Repo, git, make_repo, worktree_state


def _snap(repo: Repo) -> Snapshot:
    return Snapshot.from_json(
        take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions()).to_json()
    )


class _Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_create_rebuilds_the_tree_from_a_shared_mirror(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('edited')\n")
    repo.write("data/new.bin", b"\x00\x01")
    spaces = Workspaces(tmp_path / "ws")
    log = _Log()
    dest = spaces.create("task-1", _snap(repo), log)
    assert dest == tmp_path / "ws" / "tasks" / "task-1"
    assert worktree_state(dest) == worktree_state(repo.path)
    assert any("cloning" in line for line in log) and "workspace ready" in log[-1]
    mirror = spaces.mirror_dir(str(repo.origin))
    assert Git(mirror).text("rev-parse", "--is-bare-repository") == "true"


def test_a_commit_already_mirrored_needs_no_network(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    spaces.create("t1", _snap(repo), _Log())
    assert repo.origin is not None
    repo.origin.rename(tmp_path / "origin-gone.git")  # any fetch would now fail
    repo.write("train.py", "print('another uncommitted change')\n")  # a new tree, same commit
    log = _Log()
    dest = spaces.create("t2", _snap(repo), log)
    assert any("nothing to fetch" in line for line in log)
    assert worktree_state(dest) == worktree_state(repo.path)


def _porcelain(path: Path) -> str:
    return git(path, "status", "--porcelain", "--untracked-files=all")


def _dirty(repo: Repo) -> Snapshot:
    repo.write("train.py", "print('edited')\n")
    repo.write("data/new.bin", b"\x00\x01\xff")
    repo.write("run.sh", "#!/bin/sh\necho run\n").chmod(0o755)
    repo.write(".github/objects/ci.yml", "on: push\n")  # named like git's object store
    (repo.path / "latest").symlink_to("train.py")
    return _snap(repo)


def test_the_tasks_of_one_snapshot_copy_its_verified_tree_without_git(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spaces = Workspaces(tmp_path / "ws")
    snap = _dirty(repo)
    first = _Log()
    spaces.create("t1", snap, first)
    assert "; rebuilt (" in first[-1]

    def no_git(*args: object, **kwargs: object) -> None:
        raise AssertionError("git ran for a tree already built")

    for name in ("run", "ok", "text"):
        monkeypatch.setattr(Git, name, no_git)
    log = _Log()
    dest = spaces.create("t2", snap, log)
    assert "a copy of the tree rebuilt for an earlier task" in log[-1]
    monkeypatch.undo()
    assert worktree_state(dest) == worktree_state(repo.path)
    assert _porcelain(dest) == _porcelain(repo.path) != ""  # the change is uncommitted, as there
    assert git(dest, "rev-parse", "HEAD", "--abbrev-ref", "HEAD") == git(
        repo.path, "rev-parse", "HEAD", "--abbrev-ref", "HEAD"
    )
    assert git(dest, "remote", "get-url", "origin").strip() == str(repo.origin)


def test_a_task_changing_its_copy_changes_nothing_for_the_next(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    snap = _dirty(repo)
    expected, status = worktree_state(repo.path), _porcelain(repo.path)
    first = spaces.create("t1", snap, _Log())
    for path in first.rglob("*"):  # the task's own files, git's objects too
        if path.is_file() and not path.is_symlink():
            assert path.stat().st_nlink == 1, path
    (first / "train.py").write_text("print('changed by the task')\n")
    with (first / ".github" / "objects" / "ci.yml").open("r+") as ci:  # in place
        ci.write("ON")
    (first / "run.sh").chmod(0o644)
    (first / "out.txt").write_text("results")
    git(first, "add", "-A")
    git(first, "commit", "-q", "-m", "the task commits")
    git(first, "gc", "--quiet", "--prune=now")  # repacks: the shared object files go away here
    second = spaces.create("t2", snap, _Log())
    assert worktree_state(second) == expected
    assert _porcelain(second) == status
    assert worktree_state(spaces.tree_dir(snap)) == expected
    git(second, "fsck", "--strict", "--no-dangling")  # raises on a missing or broken object


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def test_a_task_appending_to_its_pack_files_leaves_the_tree_and_the_next_task_intact(
    repo: Repo, tmp_path: Path
) -> None:
    spaces = Workspaces(tmp_path / "ws")
    snap = _dirty(repo)
    tree = spaces.tree_dir(snap)
    first = spaces.create("t1", snap, _Log())
    cached = _files(tree)
    packs = sorted((first / ".git" / "objects" / "pack").iterdir())
    assert packs
    for pack in packs:  # as a task may, read-only modes notwithstanding: it owns its copy
        pack.chmod(0o644)
        with pack.open("ab") as out:
            out.write(b"appended by the task")
    assert _files(tree) == cached
    log = _Log()
    second = spaces.create("t2", snap, log)
    assert "a copy of the tree rebuilt for an earlier task" in log[-1]
    git(second, "fsck", "--strict", "--no-dangling")  # raises on a broken pack
    assert worktree_state(second) == worktree_state(repo.path)


@pytest.mark.slow
def test_trees_built_from_one_mirror_share_no_file_and_stay_reusable(
    repo: Repo, tmp_path: Path
) -> None:
    for n in range(120):  # more objects than git unpacks: the mirror keeps the fetched pack
        repo.write(f"many/{n}.txt", f"{n}\n")
    repo.commit("many files")
    repo.push()
    spaces = Workspaces(tmp_path / "ws")
    snaps = []
    for n in range(3):  # each clones the mirror again, hard-linking its pack
        repo.write("train.py", f"print({n})\n")
        snaps.append(_snap(repo))
        spaces.create(f"t{n}", snaps[-1], _Log())
    for snap in snaps:
        tree = spaces.tree_dir(snap)
        assert all(p.stat().st_nlink == 1 for p in tree.rglob("*") if p.is_file()), tree
        log = _Log()
        spaces.create("again", snap, log)
        assert "a copy of the tree rebuilt for an earlier task" in log[-1], log


@pytest.mark.slow
@pytest.mark.parametrize("where", ["train.py", ".git/HEAD", ".git/objects/pack"])
def test_a_cached_tree_changed_after_its_build_is_rebuilt_not_copied(
    repo: Repo, tmp_path: Path, where: str
) -> None:
    spaces = Workspaces(tmp_path / "ws")
    snap = _dirty(repo)
    spaces.create("t1", snap, _Log())
    tree = spaces.tree_dir(snap)
    target = tree / where
    if target.is_dir():
        target = sorted(target.glob("*.pack"))[0]
        target.chmod(0o644)
    stat = target.stat()
    original = target.read_bytes()
    changed = original.replace(b"print", b"PRINT") if where == "train.py" else original[::-1]
    target.write_bytes(changed)  # the same size, and the old times put back
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    log = _Log()
    dest = spaces.create("t2", snap, log)
    assert [line for line in log if "changed since it was built" in line] == [
        f"the tree cached at {tree} changed since it was built; rebuilding it"
    ], log
    assert "; rebuilt (" in log[-1]
    assert worktree_state(dest) == worktree_state(repo.path)
    git(dest, "fsck", "--strict", "--no-dangling")


def test_a_tree_under_gitattributes_comes_back_byte_for_byte_and_keys_its_literal_files(
    repo: Repo, tmp_path: Path
) -> None:
    repo.write(".gitattributes", "* text=auto\n")
    repo.write("windows.txt", "a\r\nb\r\n")  # stored as LF; a checkout writes LF
    repo.commit("normalised")
    repo.push()
    repo.write("untracked.txt", "x\r\n")
    snap = _snap(repo)
    assert snap.spec.literal_files is not None
    dest = Workspaces(tmp_path / "ws").create("t", snap, _Log())
    assert worktree_state(dest) == worktree_state(repo.path)
    without = dataclasses.replace(snap.spec, literal_files=None)
    assert tree_key(Snapshot(spec=without, blobs=snap.blobs)) != tree_key(snap)


def test_the_tree_key_covers_the_submodules_patches(repo: Repo) -> None:
    snap = _snap(repo)
    keys = set()
    for patch in (b"one", b"two"):
        ref = BlobRef.of(patch)
        repo_state = dataclasses.replace(snap.spec.repo, submodule_trees={"lib": "a" * 40})
        spec = dataclasses.replace(snap.spec, repo=repo_state, submodule_patches={"lib": ref})
        keys.add(tree_key(Snapshot(spec, {ref.sha256: patch})))
    assert len(keys) == 2


@pytest.mark.slow
def test_trees_beyond_the_limit_are_evicted_least_recently_used(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws", max_trees=2)
    snaps = []
    for n in range(3):
        repo.write("train.py", f"print({n})\n")
        snaps.append(_snap(repo))
    spaces.create("a", snaps[0], _Log())
    spaces.create("b", snaps[1], _Log())
    os.utime(spaces.tree_dir(snaps[1]).with_name(spaces.tree_dir(snaps[1]).name + ".ready"), (1, 1))
    spaces.create("a2", snaps[0], _Log())  # a is now the more recently used
    spaces.create("c", snaps[2], _Log())
    kept = {p.name for p in spaces.trees.iterdir() if p.is_dir() and p.name != "locks"}
    assert kept == {spaces.tree_dir(snaps[0]).name, spaces.tree_dir(snaps[2]).name}
    log = _Log()
    dest = spaces.create("b2", snaps[1], log)  # evicted: rebuilt, still exact
    assert "; rebuilt (" in log[-1]
    assert (dest / "train.py").read_text() == "print(1)\n"


@pytest.mark.slow
def test_mirrors_beyond_the_limit_are_evicted_least_recently_used(tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws", max_mirrors=2)
    repos = [make_repo(tmp_path / name, name=name) for name in ("one", "two", "three")]
    for n, repo in enumerate(repos[:2]):
        spaces.create(f"t{n}", _snap(repo), _Log())
    first = spaces.mirror_dir(str(repos[0].origin))
    os.utime(first.with_name(first.name + ".used"), (1, 1))  # used long ago
    held = FileLock(spaces.mirror_dir(str(repos[1].origin)).with_suffix(".lock"), shared=True)
    assert held.acquire()
    try:
        repos[0].write("train.py", "print('again')\n")
        spaces.create("t0b", _snap(repos[0]), _Log())  # one is the most recent again
        spaces.create("t2", _snap(repos[2]), _Log())  # two is in use: kept, over the limit
    finally:
        held.release()

    def mirrors() -> list[str]:
        return sorted(p.name.split("-")[0] for p in spaces.mirrors.glob("*.git"))

    assert mirrors() == ["one", "three", "two"]
    repos[2].write("train.py", "print(3)\n")
    spaces.create("t3", _snap(repos[2]), _Log())  # now two, the least recently used, goes
    assert mirrors() == ["one", "three"]
    log = _Log()
    repos[1].write("train.py", "print(2)\n")
    dest = spaces.create("t1b", _snap(repos[1]), log)  # evicted: cloned again, still exact
    assert any(line.startswith("cloning ") for line in log), log
    assert worktree_state(dest) == worktree_state(repos[1].path)


def test_a_tree_whose_build_died_half_way_is_built_again(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    snap = _dirty(repo)
    half = spaces.tree_dir(snap)
    half.mkdir(parents=True)
    (half / "train.py").write_text("half written")
    (half.parent / f".{half.name}.999999.tmp").mkdir()
    dest = spaces.create("t", snap, _Log())
    assert worktree_state(dest) == worktree_state(repo.path)
    assert not (half.parent / f".{half.name}.999999.tmp").exists()


@pytest.mark.slow
def test_only_a_missing_commit_triggers_a_fetch(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    spaces.create("t1", _snap(repo), _Log())
    repo.write("train.py", "print('v2')\n")
    repo.commit("v2")
    repo.push()
    log = _Log()
    dest = spaces.create("t2", _snap(repo), log)
    assert any(line.startswith("fetching") for line in log)
    assert (dest / "train.py").read_text() == "print('v2')\n"


def test_unpushed_commits_come_from_the_bundle(repo: Repo, tmp_path: Path) -> None:
    repo.write("local.py", "x = 1\n")
    repo.commit("not pushed")
    dest = Workspaces(tmp_path / "ws").create("t", _snap(repo), _Log())
    assert worktree_state(dest) == worktree_state(repo.path)


def test_repo_without_remote_is_rebuilt_from_its_bundle(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, with_origin=False)
    repo.write("dirty.txt", "x\n")
    log = _Log()
    dest = Workspaces(tmp_path / "ws").create("t", _snap(repo), log)
    assert worktree_state(dest) == worktree_state(repo.path)
    assert "no remote" in log[0]


def test_two_agents_share_one_mirror(repo: Repo, tmp_path: Path) -> None:
    snap = _snap(repo)
    errors: list[BaseException] = []

    def agent(i: int) -> None:
        try:
            Workspaces(tmp_path / "ws").create(f"task-{i}", snap, _Log())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in (tmp_path / "ws" / "mirrors").iterdir() if p.is_dir()] == [
        Workspaces(tmp_path / "ws").mirror_dir(str(repo.origin)).name
    ]
    for i in range(4):
        assert (tmp_path / "ws" / "tasks" / f"task-{i}" / "train.py").exists()


def test_a_retried_task_gets_a_fresh_tree(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    dest = spaces.create("t", _snap(repo), _Log())
    (dest / "leftover.txt").write_text("from the first attempt")
    spaces.create("t", _snap(repo), _Log())
    assert not (dest / "leftover.txt").exists()


def test_remove_deletes_unless_kept(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    dest = spaces.create("t", _snap(repo), _Log())
    (dest / "ro").mkdir()
    (dest / "ro" / "f").write_text("x")
    (dest / "ro").chmod(0o555)
    spaces.remove("t")
    assert not dest.exists()
    spaces.remove("t")  # already gone: fine
    kept = Workspaces(tmp_path / "ws", keep=True)
    dest = kept.create("k", _snap(repo), _Log())
    kept.remove("k")
    assert dest.exists()


def test_a_damaged_mirror_is_cloned_again(repo: Repo, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "ws")
    mirror = spaces.mirror_dir(str(repo.origin))
    mirror.mkdir(parents=True)
    (mirror / "garbage").write_text("not a repo")
    log = _Log()
    spaces.create("t", _snap(repo), log)
    assert any("damaged" in line for line in log)


@pytest.mark.slow
@pytest.mark.parametrize("task_id", ["../evil", "a/b", "", "."])
def test_task_ids_that_are_not_folder_names_are_refused(
    repo: Repo, tmp_path: Path, task_id: str
) -> None:
    with pytest.raises(ReconstructError, match="cannot name a workspace folder"):
        Workspaces(tmp_path / "ws").create(task_id, _snap(repo), _Log())


@pytest.mark.slow
def test_a_cancel_while_another_task_builds_the_same_tree(repo: Repo, tmp_path: Path) -> None:
    snap = _snap(repo)
    spaces = Workspaces(tmp_path / "ws")
    builder = FileLock(spaces.trees / "locks" / f"{tree_key(snap)[:2]}.lock")
    assert builder.try_acquire()  # as another agent's build holds it
    asked = iter([False, False, True])
    try:
        with pytest.raises(PreparationCanceled, match="another task rebuilt the same tree"):
            spaces.create("t", snap, _Log(), should_stop=lambda: next(asked))
    finally:
        builder.release()


_AGENT = """\
import sys
from pathlib import Path
from overnight.agent.workspace.workspaces import Workspaces
from overnight.spec import BlobRef, Snapshot
snap = Snapshot.from_json(Path(sys.argv[2]).read_text())
Workspaces(Path(sys.argv[1])).create(sys.argv[3], snap, lambda line: None)
"""


@pytest.mark.slow
def test_agent_processes_on_one_host_share_the_mirror_and_the_tree(
    repo: Repo, tmp_path: Path
) -> None:
    snap = _dirty(repo)
    spec = tmp_path / "spec.json"
    spec.write_text(snap.to_json())
    root = tmp_path / "ws"
    procs = [
        subprocess.Popen([sys.executable, "-c", _AGENT, str(root), str(spec), f"task-{i}"])
        for i in range(3)
    ]
    assert [proc.wait(60) for proc in procs] == [0, 0, 0]
    spaces = Workspaces(root)
    assert [p.name for p in spaces.mirrors.iterdir() if p.is_dir()] == [
        spaces.mirror_dir(str(repo.origin)).name
    ]
    assert [p.name for p in spaces.trees.iterdir() if p.is_dir() and p.name != "locks"] == [
        tree_key(snap)
    ]
    expected = worktree_state(repo.path)
    for i in range(3):
        assert worktree_state(spaces.task_dir(f"task-{i}")) == expected


@pytest.mark.slow
def test_a_submodule_comes_with_its_recorded_commit_in_every_copy(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib-base", name="lib")
    lib.write("lib.py", "VERSION = 2\n")
    second = lib.commit("v2")
    lib.push()
    repo = make_repo(tmp_path / "main-base")
    repo.git(
        "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib.origin), "vendor/lib"
    )  # fmt: skip
    repo.commit("add lib")
    repo.push()
    spaces = Workspaces(tmp_path / "ws")
    snap = _snap(repo)
    spaces.create("t1", snap, _Log())
    dest = spaces.create("t2", snap, _Log())  # a copy of the tree t1 rebuilt
    assert git(dest / "vendor" / "lib", "rev-parse", "HEAD").strip() == second
    assert worktree_state(dest / "vendor" / "lib") == worktree_state(repo.path / "vendor" / "lib")
    (dest / "vendor" / "lib" / "lib.py").write_text("changed by the task\n")
    assert _porcelain(dest / "vendor" / "lib") == " M lib.py\n"
    assert _porcelain(spaces.create("t3", snap, _Log()) / "vendor" / "lib") == ""


@pytest.mark.slow
def test_a_task_tree_has_the_changes_made_inside_submodules(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib-base", name="lib")
    repo = make_repo(tmp_path / "main-base")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib.origin), "lib")
    repo.commit("add lib")
    repo.push()
    (repo.path / "lib" / "train.py").write_text("print('edited inside the submodule')\n")
    (repo.path / "lib" / "extra.bin").write_bytes(b"\x00\xff" * 100)
    spaces = Workspaces(tmp_path / "ws")
    log = _Log()
    first = spaces.create("t1", _snap(repo), log)
    assert "changes in 1 submodule(s)" in log[-1]
    second = spaces.create("t2", _snap(repo), _Log())  # a copy of the verified tree
    for tree in (first, second):
        assert worktree_state(tree) == worktree_state(repo.path)
        git(tree / "lib", "fsck", "--no-dangling")


PWNED = 'print("pwned: not the code this snapshot recorded", flush=True)\n'


@pytest.mark.slow
def test_an_agent_fails_tasks_whose_submodule_keys_leave_their_tree_and_writes_nothing(
    redis_url: str, tmp_path: Path, venv_cache: Path, agent_store: TaskStore
) -> None:
    canary = make_canary(tmp_path)
    project = make_project(tmp_path)
    (project.path / "link").symlink_to(canary.path)
    project.commit("a link to the canary")
    project.push()
    config = agent_config(redis_url, tmp_path / "agent", venv_cache)
    honest = snapshot_of(project)
    first = enqueue(agent_store, project, snapshot=honest)
    run_burst(config)
    assert agent_store.get(first.id).status is TaskStatus.FINISHED
    tree = Workspaces(config.workspace_path).tree_dir(honest)
    cached = worktree_state(tree)
    # From the agent's build folder trees/.<key>.<pid>.tmp, ../<key> is the honest tree.
    patch, pwned_tree = change_of(tree, tmp_path / "scratch", {"job.py": PWNED})
    climbing = aimed_at(honest, f"../{tree.name}", patch, pwned_tree)
    patch, canary_tree = canary.attack(tmp_path / "scratch-canary")
    linked = aimed_at(honest, "link", patch, canary_tree)
    before = canary.state()
    attacks = [enqueue(agent_store, project, snapshot=snap) for snap in (climbing, linked)]
    later = enqueue(agent_store, project, snapshot=honest)
    run_burst(config)
    reasons = {
        "climbing": (Phase.AGENT, f"names the path '../{tree.name}', which climbs out"),
        "linked": (Phase.WORKSPACE, "'link' is a symbolic link in the recorded tree"),
    }
    for record, (phase, reason) in zip(attacks, reasons.values(), strict=True):
        failed = agent_store.get(record.id)
        assert (failed.status, failed.phase) == (TaskStatus.FAILED, phase), failed
        assert failed.error is not None and reason in failed.error
        assert "\n" not in failed.error
    assert canary.state() == before and not canary.filter_ran.exists()
    assert worktree_state(tree) == cached
    assert agent_store.get(later.id).status is TaskStatus.FINISHED
    output = log_text(agent_store, later.id)
    assert "done" in output and "pwned" not in output


def _pushed_then_force_pushed_away(repo: Repo) -> Snapshot:
    """A snapshot of a pushed commit that a force-push then took off its branch."""
    assert repo.origin is not None
    repo.write("train.py", "print('pushed')\n")
    repo.commit("pushed")
    repo.push()
    recorded = _snap(repo)
    assert recorded.spec.bundle is None
    lost = recorded.spec.repo.commit
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.commit("the rewritten history")
    repo.git("push", "-q", "--force", "origin", "HEAD")
    assert git(repo.origin, "branch", "--contains", lost, check=False) == ""
    return recorded


def test_a_commit_force_pushed_off_its_branch_is_fetched_by_its_id(
    repo: Repo, tmp_path: Path
) -> None:
    recorded = _pushed_then_force_pushed_away(repo)
    lost = recorded.spec.repo.commit
    spaces = Workspaces(tmp_path / "ws")
    log = _Log()
    dest = spaces.create("t", recorded, log)
    assert (dest / "train.py").read_text() == "print('pushed')\n"
    assert any(f"holds {lost[:7]} any more" in line for line in log), log
    mirror = Git(spaces.mirror_dir(str(repo.origin)))
    assert mirror.text("rev-parse", f"refs/overnight/commits/{lost}") == lost
    mirror.run("fetch", "--quiet", "--prune", "origin")  # the agent's next update keeps it
    assert mirror.ok("cat-file", "-e", f"{lost}^{{commit}}")


def test_a_commit_the_remote_lost_fails_saying_so_and_how_to_fix_it(
    repo: Repo, tmp_path: Path
) -> None:
    assert repo.origin is not None
    recorded = _pushed_then_force_pushed_away(repo)
    lost = recorded.spec.repo.commit
    git(repo.origin, "reflog", "expire", "--expire=now", "--all")
    git(repo.origin, "gc", "-q", "--prune=now")
    with pytest.raises(ReconstructError) as info:
        Workspaces(tmp_path / "ws").create("t", recorded, _Log())
    message = str(info.value)
    assert message.startswith(f"commit {lost[:7]} is no longer on {repo.origin}: "), message
    assert "push it again" in message and "enqueue again" in message
    assert "\n" not in message
    assert not (tmp_path / "ws" / "tasks" / "t").exists()
