from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from overnight.agent.workspace import GitCredentials, Workspaces
from overnight.errors import ReconstructError
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot
from tests.fixtures.gitrepo import Repo, git, make_repo, worktree_state

TOKEN = "s3cret-token"


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
    snap = _snap(repo)
    spaces.create("t1", snap, _Log())
    assert repo.origin is not None
    repo.origin.rename(tmp_path / "origin-gone.git")  # any fetch would now fail
    log = _Log()
    dest = spaces.create("t2", snap, log)
    assert any("nothing to fetch" in line for line in log)
    assert worktree_state(dest) == worktree_state(repo.path)


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


@pytest.mark.parametrize("task_id", ["../evil", "a/b", "", "."])
def test_task_ids_that_are_not_folder_names_are_refused(
    repo: Repo, tmp_path: Path, task_id: str
) -> None:
    with pytest.raises(ReconstructError, match="cannot name a workspace folder"):
        Workspaces(tmp_path / "ws").create(task_id, _snap(repo), _Log())


def test_unreachable_remote_names_it(repo: Repo, tmp_path: Path) -> None:
    snap = _snap(repo)
    assert repo.origin is not None
    shutil.rmtree(repo.origin)
    with pytest.raises(ReconstructError, match=rf"^cannot reach {repo.origin}: "):
        Workspaces(tmp_path / "ws").create("t", snap, _Log())
    assert not (tmp_path / "ws" / "tasks" / "t").exists()


def test_ssh_never_prompts_and_names_the_host(repo: Repo, tmp_path: Path) -> None:
    env = GitCredentials(ssh_command="ssh -i /keys/deploy").env()
    assert env["GIT_SSH_COMMAND"].startswith("ssh -i /keys/deploy -o BatchMode=yes")
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    repo.git("remote", "set-url", "origin", "ssh://git@127.0.0.1:9/lab/private.git")
    snap = _snap(repo)
    with pytest.raises(ReconstructError) as info:
        Workspaces(tmp_path / "ws").create("t", snap, _Log())
    assert str(info.value).startswith("cannot reach ssh://git@127.0.0.1:9/lab/private.git: ssh: ")


class _AuthHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a bare repo over git's dumb HTTP protocol, only with the right token."""

    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def private_remote(repo: Repo, tmp_path: Path) -> Iterator[str]:
    assert repo.origin is not None
    git(repo.origin, "update-server-info")
    handler = functools.partial(_AuthHandler, directory=str(repo.origin.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{repo.origin.name}"
    repo.git("remote", "set-url", "origin", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_missing_credential_fails_at_once_naming_the_host(
    repo: Repo, tmp_path: Path, private_remote: str
) -> None:
    with pytest.raises(ReconstructError) as info:
        Workspaces(tmp_path / "ws").create("t", _snap(repo), _Log())
    message = str(info.value)
    assert message.startswith(f"cannot reach {private_remote}: ")
    assert "no working credentials for 127.0.0.1" in message


def test_agent_token_opens_a_private_remote_and_is_never_stored(
    repo: Repo, tmp_path: Path, private_remote: str
) -> None:
    repo.write("train.py", "print('private')\n")
    prefix = private_remote.rsplit("/", 1)[0] + "/"
    spaces = Workspaces(tmp_path / "ws", credentials=GitCredentials(tokens={prefix: TOKEN}))
    snap = _snap(repo)
    assert TOKEN not in snap.to_json()
    dest = spaces.create("t", snap, _Log())
    assert worktree_state(dest) == worktree_state(repo.path)
    for root, _, files in os.walk(tmp_path / "ws"):
        for name in files:
            path = Path(root) / name
            if name == "config" or path.suffix in (".txt", ""):
                assert TOKEN.encode() not in path.read_bytes(), path
