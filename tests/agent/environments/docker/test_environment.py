"""Docker mode against a real engine: env images built once, containers run, stopped, adopted."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import io
import math
import os
import shutil
import tarfile
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import pytest
import uv

from overnight.agent.config import AgentConfig
from overnight.agent.environments.base import Prepared, RunRequest
from overnight.agent.environments.docker.build import (
    BUILD_DIR,
    CACHE_MOUNT,
    IMAGE_DIR,
    NOBODY,
    OWN_CACHE,
    VENV,
    Installer,
)
from overnight.agent.environments.docker.environment import (
    DockerEnvironment,
    ca_bundle_path,
    default_user,
    parse_mount,
    parse_user,
)
from overnight.agent.environments.docker.images import requirements_digest
from overnight.agent.environments.docker.process import (
    DockerProcess,
    parse_timestamp,
    resume_point,
)
from overnight.agent.run.supervisor import CANCELED, supervise
from overnight.errors import ConfigError, EnvironmentBuildError, InstallError, TaskRunError
from tests.fixtures.docker import (
    BASE_IMAGE,
    NO_BUILD_ISOLATION,
    DockerSandbox,
    make_spec,
    never,
    quiet,
)
from tests.fixtures.wheels import broken_sdist

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def request(workspace: Path, *argv: str, task_id: str = "t-1", **fields: Any) -> RunRequest:
    fields.setdefault("env", {})
    return RunRequest(task_id=task_id, argv=argv, workspace=workspace, workdir=".", **fields)


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    (ws / "sub").mkdir(parents=True)
    return ws


def start_script(sandbox: DockerSandbox, tmp_path: Path, script: str) -> DockerProcess:
    """``sh -c SCRIPT`` started as a task in an environment image without requirements."""
    env = sandbox.environment()
    return env.start(sandbox.prepare(env), request(workspace(tmp_path), "sh", "-c", script))


def derived_image(
    sandbox: DockerSandbox, files: dict[str, bytes], changes: tuple[str, ...] = ()
) -> str:
    """The base image plus ``files`` (path -> content, made executable), committed."""
    container = sandbox.client.containers.create(BASE_IMAGE, ["true"])
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name.lstrip("/"))
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        container.put_archive("/", buffer.getvalue())
        image = container.commit(
            repository=f"overnight-test-base-{sandbox.tag}", tag="t", changes=list(changes)
        )
    finally:
        container.remove(force=True, v=True)
    sandbox.images.append(image.id)
    return str(image.id)


# -- building environment images -----------------------------------------------------------


def test_second_prepare_reuses_the_image_with_its_labels(docker_sandbox: DockerSandbox) -> None:
    env = docker_sandbox.environment()
    first = docker_sandbox.prepare(env)
    assert first.built
    assert first.python.startswith("3.")
    assert first.details["image"] == f"{docker_sandbox.repo}:{first.key}"

    image = docker_sandbox.client.images.get(first.details["image"])
    base = docker_sandbox.client.images.get(BASE_IMAGE)
    assert image.labels["overnight.key"] == first.key
    assert image.labels["overnight.requirements"] == requirements_digest("")
    assert image.labels["overnight.base"] == base.id
    assert image.labels["overnight.role"] == "env"
    assert not image.attrs["Config"].get("Volumes")  # the package cache stays out of tasks
    env_vars = image.attrs["Config"]["Env"]
    assert f"VIRTUAL_ENV={VENV}" in env_vars
    assert not any(v.startswith(("SSL_CERT_FILE", "PIP_CERT")) for v in env_vars)

    again = docker_sandbox.environment()  # a new agent process on the same host
    second = docker_sandbox.prepare(again)
    assert not second.built
    assert second.key == first.key == again.key(make_spec())
    assert second.details["image_id"] == first.details["image_id"]
    assert not docker_sandbox.client.containers.list(
        all=True, filters={"label": f"overnight.builder={docker_sandbox.agent_name}"}
    )


def test_requirements_in_another_order_share_the_key(docker_sandbox: DockerSandbox) -> None:
    env = docker_sandbox.environment()
    assert env.key(make_spec("b==1\na==2\n")) == env.key(make_spec("# pins\na==2\n\nb==1"))
    assert env.key(make_spec("a==2")) != env.key(make_spec("a==3"))


def test_concurrent_prepares_of_one_key_build_once(docker_sandbox: DockerSandbox) -> None:
    envs = [docker_sandbox.environment() for _ in range(2)]
    start = threading.Barrier(2)
    results: list[Prepared] = []
    logs: list[str] = []

    def prepare(env: DockerEnvironment) -> None:
        start.wait()
        results.append(env.prepare(make_spec(), logs.append, never))

    threads = [threading.Thread(target=prepare, args=(env,)) for env in envs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert sorted(p.built for p in results) == [False, True]
    assert len({p.details["image_id"] for p in results}) == 1
    assert sum("building environment" in line for line in logs) == 1


def test_a_pinned_package_installs_through_the_proxy(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    env = docker_sandbox.environment()
    lines: list[str] = []
    prepared = env.prepare(make_spec("iniconfig==2.0.0\n"), lines.append, never)
    assert prepared.built
    assert any("iniconfig" in line for line in lines)
    check = f"import iniconfig, os; print(iniconfig.__file__); print(os.path.exists('{BUILD_DIR}'))"
    proc = env.start(prepared, request(workspace(tmp_path), "python", "-c", check))
    out = b"".join(proc.output()).decode()
    assert proc.wait() == 0
    proc.discard()
    assert out.splitlines() == [
        f"{VENV}/lib/python{prepared.python[:4]}/site-packages/iniconfig/__init__.py",
        "False",  # neither the install files nor the build's own downloads
    ]
    with pytest.raises(docker.errors.NotFound):  # no cache volume unless one is named
        docker_sandbox.client.volumes.get(docker_sandbox.volume)


def sdist(name: str, setup: str) -> bytes:
    """A source distribution ``name``-1.0 whose setup.py is ``setup`` (run by every build)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = setup.encode()
        info = tarfile.TarInfo(f"{name}-1.0/setup.py")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


CACHES = (CACHE_MOUNT, OWN_CACHE)  # where a build's package cache is: shared, or its own
PLANT = f"""import os, sys
for cache in {CACHES!r}:
    if os.path.isdir(cache):
        open(os.path.join(cache, "planted"), "w").write("a wheel for the next build")
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        rights = " ".join(status[k].strip() for k in ("CapEff", "CapBnd", "NoNewPrivs"))
        sys.exit(f"planted in {{cache}} as {{os.getuid()}}:{{os.getgid()}} {{rights}}")
sys.exit("found no package cache")
"""
SEER = f"""import os, sys
from setuptools import setup
seen = [c for c in {CACHES!r} if os.path.exists(os.path.join(c, "planted"))]
if seen:
    sys.exit(f"saw what another build planted in {{seen}}")
setup(name="seer", version="1.0")
"""


def planting_builds(docker_sandbox: DockerSandbox, env: DockerEnvironment) -> list[str]:
    """A build whose requirement's setup.py plants a file in its package cache (and fails, saying
    where and with which rights), then another build that fails if it sees that file: the
    lines of both builds."""
    packages = {"/pkgs/plant-1.0.tar.gz": sdist("plant", PLANT)}
    packages["/pkgs/seer-1.0.tar.gz"] = sdist("seer", SEER)
    base = derived_image(docker_sandbox, packages)
    lines: list[str] = []
    with pytest.raises(EnvironmentBuildError, match="requirements failed to install"):
        env.prepare(make_spec("/pkgs/plant-1.0.tar.gz\n"), lines.append, never, image=base)
    uid, gid = env.uid_gid.split(":")
    planted = [line for line in lines if "planted in" in line]
    assert planted and planted[0].endswith(f" as {uid}:{gid} 0000000000000000 0000000000000000 1")
    with contextlib.suppress(EnvironmentBuildError):
        env.prepare(make_spec("/pkgs/seer-1.0.tar.gz\n"), lines.append, never, image=base)
    return lines


def test_a_build_cannot_plant_packages_for_the_next(docker_sandbox: DockerSandbox) -> None:
    env = docker_sandbox.environment(installer_env=NO_BUILD_ISOLATION)
    lines = planting_builds(docker_sandbox, env)
    assert any(f"planted in {OWN_CACHE} " in line for line in lines)  # its own, gone with it
    assert not any("saw what another build planted" in line for line in lines)
    assert lines[-1].startswith("environment ") and " built as " in lines[-1]


def test_a_named_cache_volume_is_shared_by_every_build(docker_sandbox: DockerSandbox) -> None:
    """The opt-in for a single-user host: downloads are shared, and so is what a build plants."""
    env = docker_sandbox.environment(
        cache_volume=docker_sandbox.volume, installer_env=NO_BUILD_ISOLATION
    )
    lines = planting_builds(docker_sandbox, env)
    assert any(f"planted in {CACHE_MOUNT} " in line for line in lines)
    assert any(f"saw what another build planted in ['{CACHE_MOUNT}']" in line for line in lines)


def test_a_pip_conf_reaches_the_install(docker_sandbox: DockerSandbox, tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://127.0.0.1:9/simple\nretries = 0\n")
    env = docker_sandbox.environment(pip_conf=conf, uv_bin=None)  # pip: the image's installer
    lines: list[str] = []
    with pytest.raises(EnvironmentBuildError, match="requirements failed to install"):
        env.prepare(make_spec("iniconfig==2.0.0\n"), lines.append, never)
    assert "Looking in indexes: http://127.0.0.1:9/simple" in lines


def test_uv_installs_when_the_image_has_it(docker_sandbox: DockerSandbox, tmp_path: Path) -> None:
    uv_binary = Path(uv.find_uv_bin()).read_bytes()
    with_uv = derived_image(docker_sandbox, {"/usr/local/bin/uv": uv_binary})
    env = docker_sandbox.environment()
    lines: list[str] = []
    prepared = env.prepare(make_spec("iniconfig==2.0.0\n"), lines.append, never, image=with_uv)
    assert prepared.details["installer"].startswith("uv ")
    assert any(line.startswith("overnight: installing the requirements with uv") for line in lines)
    proc = env.start(prepared, request(workspace(tmp_path), "python", "-c", "import iniconfig"))
    assert proc.wait() == 0, b"".join(proc.output())
    proc.discard()
    assert env.key(make_spec("iniconfig==2.0.0")) != env.key(
        make_spec("iniconfig==2.0.0"), image=with_uv
    )


def test_a_uv_toml_reaches_the_install(docker_sandbox: DockerSandbox, tmp_path: Path) -> None:
    with_uv = derived_image(
        docker_sandbox, {"/usr/local/bin/uv": Path(uv.find_uv_bin()).read_bytes()}
    )
    conf = tmp_path / "uv.toml"
    conf.write_text('index-url = "http://127.0.0.1:9/simple"\n')
    env = docker_sandbox.environment(uv_toml=conf, installer_env={"UV_HTTP_RETRIES": "0"})
    lines: list[str] = []
    with pytest.raises(EnvironmentBuildError, match="requirements failed to install"):
        env.prepare(make_spec("iniconfig==2.0.0\n"), lines.append, never, image=with_uv)
    assert any("127.0.0.1:9" in line for line in lines), lines


def test_an_uninstallable_requirement_fails_naming_the_installer_error(
    docker_sandbox: DockerSandbox,
) -> None:
    env = docker_sandbox.environment()
    lines: list[str] = []
    with pytest.raises(InstallError, match="requirements failed to install") as info:
        env.prepare(make_spec("this is not a requirement!!\n"), lines.append, never)
    assert str(info.value).startswith(
        f"requirements failed to install on {BASE_IMAGE} (exit code 2): Couldn't parse "
        "requirement in "
    )
    assert ": Expected one of " in str(info.value)  # uv's cause
    assert str(info.value).endswith(
        "; fix the requirements and enqueue again (a retry reuses these)"
    )
    assert not docker_sandbox.client.images.list(name=docker_sandbox.repo)


TINY_SETUP = (
    b"from setuptools import setup\nsetup(name='tiny', version='1.0', py_modules=['tiny'])\n"
)


def tiny_sdist() -> bytes:
    """An sdist whose build needs setuptools from the index (build isolation): source-only
    packages like gym==0.26.2 are such."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (
            ("setup.py", TINY_SETUP),
            ("tiny.py", b"print('tiny imported')\n"),
            ("PKG-INFO", b"Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n"),
        ):
            info = tarfile.TarInfo(f"tiny-1.0/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("agent_uv", [True, False], ids=["agents-uv", "images-pip"])
def test_a_source_only_package_installs_as_in_venv_mode(
    docker_sandbox: DockerSandbox, tmp_path: Path, agent_uv: bool
) -> None:
    """Its build requirements come from the index during the install, with uv (the agent's,
    copied into an image that has none) as with the image's pip."""
    base = derived_image(docker_sandbox, {"/pkgs/tiny-1.0.tar.gz": tiny_sdist()})
    env = docker_sandbox.environment() if agent_uv else docker_sandbox.environment(uv_bin=None)
    lines: list[str] = []
    prepared = env.prepare(make_spec("/pkgs/tiny-1.0.tar.gz\n"), lines.append, never, image=base)
    installer = prepared.details["installer"]
    if agent_uv:
        version = importlib.metadata.version("uv")
        assert installer == f"uv {version} (agent's)"
        assert any(f"installing the requirements with uv {version}" in x for x in lines)
    else:
        assert installer.startswith("pip ")
    check = f"import os, tiny; print(os.path.exists('{BUILD_DIR}'))"  # the uv copy went too
    proc = env.start(prepared, request(workspace(tmp_path), "python", "-c", check))
    assert b"".join(proc.output()) == b"tiny imported\nFalse\n"
    assert proc.wait() == 0
    proc.discard()


def test_a_failed_build_names_the_package_and_its_error(docker_sandbox: DockerSandbox) -> None:
    base = derived_image(
        docker_sandbox, {"/pkgs/bad-1.0.tar.gz": broken_sdist("bad", fails="import torch9")}
    )
    env = docker_sandbox.environment()
    with pytest.raises(InstallError) as info:
        env.prepare(make_spec("/pkgs/bad-1.0.tar.gz\n"), quiet, never, image=base)
    assert (
        ": Failed to build `bad @ file:///pkgs/bad-1.0.tar.gz`: ModuleNotFoundError: No module "
        "named 'torch9'; fix the requirements"
    ) in str(info.value)


def test_an_image_whose_python_makes_no_venv_is_named(docker_sandbox: DockerSandbox) -> None:
    probe = docker_sandbox.client.containers.run(
        BASE_IMAGE, ["python3", "-c", "import venv; print(venv.__file__)"], remove=True
    )
    venv_main = str(Path(probe.decode().strip()).with_name("__main__.py"))
    broken = derived_image(docker_sandbox, {venv_main: b"raise SystemExit('no ensurepip')\n"})
    with pytest.raises(EnvironmentBuildError, match="cannot make a venv") as info:
        docker_sandbox.environment().prepare(make_spec("six\n"), quiet, never, image=broken)
    assert not isinstance(info.value, InstallError)
    assert "(no ensurepip); use an image whose python3 has the venv module" in str(info.value)


def test_an_absent_image_that_cannot_be_pulled_is_named(docker_sandbox: DockerSandbox) -> None:
    env = docker_sandbox.environment(default_image=None)
    spec = make_spec(python="3.11.7")
    assert env.base_image(spec) == "python:3.11-slim"
    assert env.base_image(spec, image="mine:1") == "mine:1"
    missing = f"overnight-absent-{docker_sandbox.tag}:1"
    with pytest.raises(
        EnvironmentBuildError, match=f"^image {missing} is absent and cannot be pulled: .+"
    ):
        env.prepare(spec, quiet, never, image=missing)


def test_an_image_without_python_is_refused(docker_sandbox: DockerSandbox) -> None:
    no_python = derived_image(docker_sandbox, {}, changes=("ENV PATH=/nonexistent",))
    with pytest.raises(EnvironmentBuildError, match="has no python3"):
        docker_sandbox.environment().prepare(make_spec(), quiet, never, image=no_python)


def test_cancel_while_waiting_for_another_build(docker_sandbox: DockerSandbox) -> None:
    env = docker_sandbox.environment()
    key = env.key(make_spec())
    lock = docker_sandbox.state_dir / "locks" / f"{docker_sandbox.repo}-{key}.lock"
    lock.parent.mkdir(parents=True)
    lines: list[str] = []
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process is building this key
        with pytest.raises(EnvironmentBuildError, match="canceled"):
            env.prepare(make_spec(), lines.append, lambda: bool(lines))
    assert lines == [f"waiting for another build of environment {key}"]


def test_cancel_during_the_install_kills_the_build(docker_sandbox: DockerSandbox) -> None:
    slow = b"import time\nprint('slow setup', flush=True)\ntime.sleep(90)\n"
    base = derived_image(docker_sandbox, {"/slowpkg/setup.py": slow})
    env = docker_sandbox.environment(installer_env=NO_BUILD_ISOLATION)
    installing = threading.Event()

    def log(line: str) -> None:
        if "installing the requirements" in line:
            installing.set()

    with pytest.raises(EnvironmentBuildError, match="canceled"):
        env.prepare(make_spec("/slowpkg\n"), log, installing.is_set, image=base)
    assert not docker_sandbox.client.containers.list(
        all=True, filters={"label": f"overnight.builder={docker_sandbox.agent_name}"}
    )


def test_old_images_are_evicted_but_never_one_in_use(docker_sandbox: DockerSandbox) -> None:
    # pip, wheel and setuptools are already in the base image: three keys, nothing downloaded
    env = docker_sandbox.environment(max_images=2)
    oldest = docker_sandbox.prepare(env, "pip")
    user = docker_sandbox.client.containers.create(oldest.details["image_id"], ["true"])
    try:
        middle = docker_sandbox.prepare(env, "wheel")
        newest = docker_sandbox.prepare(env, "setuptools")
        tags = {
            t for i in docker_sandbox.client.images.list(name=docker_sandbox.repo) for t in i.tags
        }
        assert tags == {oldest.details["image"], newest.details["image"]}
        assert middle.details["image"] not in tags
    finally:
        user.remove(force=True, v=True)
    env.images.max_images = 1
    assert env.images.evict() == [oldest.details["image"]]
    env.images.max_images, env.images.max_gb = 20, 1e-9  # by size: any image is too large
    assert env.images.evict(keep={newest.key}) == []
    assert env.images.evict() == [newest.details["image"]]


# -- running tasks ---------------------------------------------------------------------------


def test_a_task_runs_with_its_output_exit_code_workdir_and_env(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    env = docker_sandbox.environment()
    prepared = docker_sandbox.prepare(env)
    script = "pwd; echo $GREETING; echo to-stderr >&2; cat /proc/1/comm; exit 3"
    req = RunRequest(
        task_id="t-run",
        argv=("sh", "-c", script),
        workspace=workspace(tmp_path),
        workdir="sub",
        env={"GREETING": "hello there"},
    )
    proc = env.start(prepared, req)
    out = b"".join(proc.output()).decode()
    assert proc.wait() == 3
    assert proc.poll() == 3
    lines = out.splitlines()  # docker keeps each stream's order, not their interleaving
    assert [line for line in lines if line != "to-stderr"] == [
        "/workspace/sub",
        "hello there",
        "docker-init",
    ]
    assert "to-stderr" in lines
    container = docker_sandbox.client.containers.get(proc.ident)
    assert container.labels["overnight.task"] == "t-run"
    assert container.labels["overnight.agent"] == docker_sandbox.agent_name
    proc.discard()
    assert not docker_sandbox.client.containers.list(all=True, filters={"id": proc.ident})


def test_files_written_by_the_task_belong_to_its_unprivileged_user(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    env = docker_sandbox.environment()
    user = NOBODY if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert env.uid_gid == user
    prepared = docker_sandbox.prepare(env)
    ws = workspace(tmp_path)
    script = "echo x > out.txt && mkdir -p d && touch d/f && touch $HOME/home-is-writable && id -u"
    proc = env.start(prepared, request(ws, "sh", "-c", script))
    out = b"".join(proc.output())
    assert proc.wait() == 0, out
    proc.discard()
    uid, gid = (int(n) for n in user.split(":"))
    assert out == f"{uid}\n".encode()
    for path in (ws / "out.txt", ws / "d", ws / "d" / "f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)


def test_a_task_has_no_capabilities_and_cannot_gain_any(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    # a setuid-root program of the image (su, mount...) gives nothing either: NoNewPrivs
    script = "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs):' /proc/self/status; id -u"
    proc = start_script(docker_sandbox, tmp_path, script)
    out = b"".join(proc.output()).decode()
    assert proc.wait() == 0, out
    proc.discard()
    status = dict(line.split(":\t") for line in out.splitlines()[:-1])
    assert status == {
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
    }
    assert out.splitlines()[-1] != "0"


@pytest.mark.skipif(os.getuid() != 0, reason="only a root agent can hand a tree to another user")
def test_a_root_agent_hands_the_tree_to_the_configured_user(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    env = docker_sandbox.environment(uid_gid="4321:4322")
    prepared = docker_sandbox.prepare(env)
    ws = workspace(tmp_path)  # made by the agent: root's
    (ws / "sub" / "data.txt").write_text("from the repo")
    (ws / "link").symlink_to("/etc/hostname")
    shared = tmp_path / "cached-tree-object"  # a git object the tree shares with the cache
    shared.write_text("object\n")
    shared.chmod(0o444)
    os.link(shared, ws / "object")
    script = (
        "echo x > out.txt && echo more >> sub/data.txt && mkdir d && touch d/f && "
        "chmod u+w object && echo planted >> object && id -u"
    )
    proc = env.start(prepared, request(ws, "sh", "-c", script))
    out = b"".join(proc.output())
    assert proc.wait() == 0, out
    proc.discard()
    assert out == b"4321\n"
    assert (ws / "object").read_text() == "object\nplanted\n"  # the task's own copy
    assert shared.read_text() == "object\n"
    assert (shared.stat().st_uid, shared.stat().st_nlink) == (0, 1)
    for path in (ws, ws / "sub", ws / "sub" / "data.txt", ws / "out.txt", ws / "d" / "f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    assert (ws / "link").lstat().st_uid == 4321
    assert Path("/etc/hostname").stat().st_uid == 0  # a link's target is left alone


def test_terminate_lets_the_task_clean_up(docker_sandbox: DockerSandbox, tmp_path: Path) -> None:
    script = "trap 'echo got-term; exit 5' TERM; echo ready; while true; do sleep 0.05; done"
    proc = start_script(docker_sandbox, tmp_path, script)
    chunks = proc.output()
    assert next(chunks) == b"ready\n"
    assert proc.poll() is None
    proc.terminate()
    assert b"".join(chunks) == b"got-term\n"
    assert proc.wait() == 5
    proc.discard()


def test_kill_stops_a_task_that_ignores_terminate(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    script = "trap '' TERM; echo ready; while true; do sleep 0.05; done"
    proc = start_script(docker_sandbox, tmp_path, script)
    assert next(proc.output()) == b"ready\n"
    proc.terminate()
    assert proc.wait(timeout=0.5) is None  # it ignores SIGTERM: still running after the grace
    proc.kill()
    assert proc.wait() == 137
    proc.discard()


def test_a_restarted_agent_adopts_a_running_container(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    ws = workspace(tmp_path)
    env = docker_sandbox.environment()
    prepared = docker_sandbox.prepare(env)
    script = "echo first; while [ ! -f go ]; do sleep 0.05; done; echo second; exit 7"
    proc = env.start(prepared, request(ws, "sh", "-c", script, task_id="t-adopt"))
    chunks = proc.output()
    assert isinstance(chunks, Generator)  # closed below as the dying agent's stream would be
    assert next(chunks) == b"first\n"
    chunks.close()
    since, ident = proc.last_log_time, proc.ident
    del env, proc, chunks  # the agent dies; the container runs on

    client = docker.from_env(timeout=60)  # the new agent process has its own connection
    try:
        restarted = DockerEnvironment(
            client, agent_name=docker_sandbox.agent_name, state_dir=docker_sandbox.state_dir
        )
        other = DockerEnvironment(client, agent_name=f"{docker_sandbox.agent_name}-other")
        assert other.adopt() == []
        (adopted,) = restarted.adopt()
        assert (adopted.task_id, adopted.state, adopted.exit_code) == ("t-adopt", "running", None)
        assert adopted.running
        resumed = adopted.process_since(since)
        assert resumed.ident == ident
        (ws / "go").touch()
        assert b"".join(resumed.output()) == b"second\n"
        assert resumed.wait() == 7
        assert b"".join(adopted.process.output()) == b"first\nsecond\n"  # from the start
        resumed.discard()
        assert restarted.adopt() == []
    finally:
        client.close()


def test_a_late_reader_resumes_after_the_last_stored_line_not_its_receive_time(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    script = (
        "echo building-output-twin; for i in 0 1 2 3 4 5 6 7 8 9; do echo tick $i; sleep 0.05; done"
    )
    proc = start_script(docker_sandbox, tmp_path, script)
    assert proc.wait() == 0
    stamped = [
        (parse_timestamp(raw.partition(b" ")[0]), raw.partition(b" ")[2].decode().strip())
        for raw in proc.container.logs(stream=True, timestamps=True)
    ]
    when = dict((text, moment) for moment, text in stamped)
    late = when["tick 8"] + 0.001  # the agent read tick 5 only after tick 8 was written
    stored = [
        (100.0, "pip output before the container started"),
        *((when[f"tick {i}"] + 0.2, f"tick {i}") for i in range(2, 5)),
        (late, "tick 5"),
    ]
    resumed = DockerProcess(proc.container, since=resume_point(proc.container, stored))
    assert b"".join(resumed.output()) == b"tick 6\ntick 7\ntick 8\ntick 9\n"
    # agent lines are not the container's; one line alone still finds its place
    only_last = [(late - 0.5, "[overnight] cancel requested"), (late, "tick 5")]
    assert resume_point(proc.container, only_last) == when["tick 5"]
    read_at_once = [(math.floor(when["tick 5"] * 1000) / 1000, "tick 5")]  # stored to the ms
    assert resume_point(proc.container, read_at_once) == when["tick 5"]
    # nothing of its output stored yet: all of it; nothing stored at all: from the start
    nothing_yet = [(late, "[overnight] preparing the docker environment")]
    replayed = DockerProcess(proc.container, since=resume_point(proc.container, nothing_yet))
    assert b"".join(replayed.output()).startswith(b"building-output-twin\ntick 0\n")
    assert resume_point(proc.container, []) is None
    proc.discard()


def test_a_container_that_exited_while_the_agent_was_down_reports_its_status(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    proc = start_script(docker_sandbox, tmp_path, "echo done; exit 4")
    assert proc.wait() == 4
    (adopted,) = docker_sandbox.environment().adopt()
    assert (adopted.state, adopted.exit_code, adopted.running) == ("exited", 4, False)
    assert b"".join(adopted.process.output()) == b"done\n"
    assert adopted.process.wait() == 4


def test_supervise_streams_a_container_and_kills_it_after_the_grace(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    script = "trap 'echo ignoring-term' TERM; echo started; while true; do sleep 0.05; done"
    proc = start_script(docker_sandbox, tmp_path, script)
    lines: list[str] = []
    outcome = supervise(
        proc,
        lambda batch: lines.extend(line for _, line in batch),
        should_stop=lambda: "started" in lines,
        timeout=None,
        grace=0.5,
    )
    proc.discard()
    assert (outcome.reason, outcome.exit_code, outcome.killed) == (CANCELED, 137, True)
    assert lines == ["started", "ignoring-term"]


def test_removals_at_once_of_one_container_all_succeed(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    """The engine answers 409 to a removal while another is under way (the task's end and an
    adoption's cleanup, say); that is no error."""
    proc = start_script(docker_sandbox, tmp_path, "sleep 60")
    handles = [DockerProcess(docker_sandbox.client.containers.get(proc.ident)) for _ in range(4)]
    errors: list[BaseException] = []

    def remove(handle: DockerProcess) -> None:
        try:
            handle.discard()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=remove, args=(handle,)) for handle in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with pytest.raises(docker.errors.NotFound):
        docker_sandbox.client.containers.get(proc.ident).reload()


def test_adopt_removes_install_containers_left_by_a_dead_build(
    docker_sandbox: DockerSandbox,
) -> None:
    labels = {"overnight.role": "build", "overnight.builder": docker_sandbox.agent_name}
    stale = docker_sandbox.client.containers.run(
        BASE_IMAGE, ["sleep", "60"], labels=labels, detach=True
    )
    assert docker_sandbox.environment().adopt() == []
    with pytest.raises(docker.errors.NotFound):
        stale.reload()


@pytest.mark.gpu
def test_an_assigned_gpu_is_visible_in_the_container(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU on this machine")
    env = docker_sandbox.environment()
    prepared = docker_sandbox.prepare(env)
    script = "nvidia-smi -L; echo $CUDA_VISIBLE_DEVICES"
    try:
        proc = env.start(prepared, request(workspace(tmp_path), "sh", "-c", script, gpu_ids=("0",)))
    except TaskRunError as exc:
        if "device driver" not in str(exc):
            raise
        pytest.skip(f"this Docker engine cannot hand out GPUs: {exc}")
    out = b"".join(proc.output()).decode()
    assert proc.wait() == 0, out
    proc.discard()
    gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
    assert len(gpus) == 1 and out.splitlines()[-1] == "0"


def test_a_gpu_task_on_an_engine_without_gpu_support_fails_naming_the_fix(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    if shutil.which("nvidia-container-runtime-hook"):
        pytest.skip("this Docker engine has the NVIDIA Container Toolkit")
    env = docker_sandbox.environment()
    prepared = docker_sandbox.prepare(env)
    with pytest.raises(TaskRunError) as caught:
        env.start(prepared, request(workspace(tmp_path), "true", gpu_ids=("0",)))
    message = str(caught.value)
    assert message.startswith("cannot start the task's container: this Docker engine cannot hand")
    assert message.endswith("or run the agent with --gpus none or --env-mode venv")
    assert env.gpu_problem("0") is not None
    label = {"label": f"overnight.agent={docker_sandbox.agent_name}"}
    assert docker_sandbox.client.containers.list(all=True, filters=label) == []


# -- container options as constructed values (no GPU in CI) ---------------------------------


@pytest.fixture
def offline_env(tmp_path: Path) -> DockerEnvironment:
    return DockerEnvironment(
        offline_client(),
        agent_name="agent-a",
        ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
        network="host",
        mounts=("/data:/data:ro", "/models:/cache/models"),
        shm_size="16g",
        uid_gid="1000:1000",
        state_dir=tmp_path,
    )


PREPARED = Prepared(
    key="k", built=False, python="3.11.2", details={"image": "i:k", "image_id": "sha256:1"}
)


def test_gpus_become_device_requests_renumbered_inside(
    offline_env: DockerEnvironment, tmp_path: Path
) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "2,5", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    opts = offline_env.run_options(
        PREPARED, request(tmp_path, "python", gpu_ids=("2", "5"), env=env)
    )
    assert opts["device_requests"] == [
        docker.types.DeviceRequest(device_ids=["2", "5"], capabilities=[["gpu"]])
    ]
    assert opts["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert opts["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_a_cpu_task_gets_no_device_request(offline_env: DockerEnvironment, tmp_path: Path) -> None:
    opts = offline_env.run_options(PREPARED, request(tmp_path, "python"))
    assert "device_requests" not in opts


def test_run_options_carry_user_init_shm_labels_network_and_mounts(
    offline_env: DockerEnvironment, tmp_path: Path
) -> None:
    req = request(tmp_path, "python", "train.py", env={"HOME": "/custom"}, labels={"x": "y"})
    opts = offline_env.run_options(PREPARED, req)
    assert (opts["image"], opts["command"], opts["entrypoint"]) == (
        "sha256:1",
        ["python", "train.py"],
        "",
    )
    assert (opts["user"], opts["init"], opts["shm_size"]) == ("1000:1000", True, "16g")
    assert (opts["cap_drop"], opts["security_opt"]) == (["ALL"], ["no-new-privileges"])
    assert "privileged" not in opts and "cap_add" not in opts
    assert opts["working_dir"] == "/workspace"
    assert opts["network_mode"] == "host"
    assert opts["labels"] == {
        "x": "y",
        "overnight.role": "task",
        "overnight.task": "t-1",
        "overnight.agent": "agent-a",
    }
    assert opts["environment"]["HOME"] == "/custom"  # the task's env wins
    ca = "/etc/overnight/ca-bundle.crt"
    assert opts["environment"]["SSL_CERT_FILE"] == opts["environment"]["PIP_CERT"] == ca
    assert opts["mounts"] == [
        docker.types.Mount("/workspace", str(tmp_path), type="bind"),
        docker.types.Mount(ca, "/etc/ssl/certs/ca-certificates.crt", type="bind", read_only=True),
        docker.types.Mount("/data", "/data", type="bind", read_only=True),
        docker.types.Mount("/cache/models", "/models", type="bind"),
    ]


def test_a_workdir_outside_the_repo_is_refused(
    offline_env: DockerEnvironment, tmp_path: Path
) -> None:
    req = RunRequest(task_id="t", argv=("x",), workspace=tmp_path, workdir="../up", env={})
    with pytest.raises(TaskRunError, match="outside the repository"):
        offline_env.run_options(PREPARED, req)


def test_the_default_user_is_the_agent_process_but_never_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1001)
    assert default_user() == "1000:1001"
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    env = DockerEnvironment(offline_client(), agent_name="a", state_dir=tmp_path)
    assert env.uid_gid == env.images.installer.user == NOBODY == "65534:65534"
    assert (
        DockerEnvironment(
            offline_client(), agent_name="a", state_dir=tmp_path, uid_gid="0:0"
        ).uid_gid
        == "0:0"
    )  # root only when named


@pytest.mark.parametrize("bad", ["/data", "data:/data", "/a:/b:rx", "/a::ro", "/a:b"])
def test_a_malformed_mount_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="mount"):
        parse_mount(bad)


# -- an agent's settings, passed through (constructed values) ------------------------------


def offline_client() -> docker.DockerClient:
    return docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")


def test_from_config_passes_every_docker_setting_through(tmp_path: Path) -> None:
    pip_conf, uv_toml, ca = (tmp_path / n for n in ("pip.conf", "uv.toml", "ca.pem"))
    for path in (pip_conf, uv_toml, ca):
        path.write_text("x")
    config = AgentConfig(
        name="agent-b",
        cache_dir=str(tmp_path / "envs"),
        default_image="mine:1",
        docker_user=f"{os.getuid()}:{os.getgid()}",
        docker_ca_bundle=str(ca),
        docker_network="none",
        docker_build_network="host",
        docker_mounts=("/data:/data:ro",),
        docker_shm_size="8g",
        docker_image_repo="envs/x",
        docker_cache_volume="vol-x",
        docker_installer_env={"PIP_INDEX_URL": "https://mirror.example/simple"},
        docker_uv_toml=str(uv_toml),
        max_envs=3,
        max_env_gb=1.5,
        env={"WANDB_MODE": "offline"},
    )
    environ = {
        "PIP_INDEX_URL": "https://ignored.example/simple",  # the agent's setting wins
        "UV_INDEX_URL": "https://uv.example/simple",
        "PIP_CONFIG_FILE": str(pip_conf),  # a host path: copied in, not passed on
        "PIP_CERT": "/host/only.pem",
        "HOME": "/root",
    }
    env = DockerEnvironment.from_config(offline_client(), config, environ)
    installer = env.images.installer
    assert (env.agent_name, env.default_image, env.ca_bundle) == ("agent-b", "mine:1", ca)
    assert (env.network, installer.network, env.shm_size) == ("none", "host", "8g")
    assert env.mounts == (docker.types.Mount("/data", "/data", type="bind", read_only=True),)
    assert (env.images.repo, installer.cache_volume, installer.ca_bundle) == ("envs/x", "vol-x", ca)
    assert (env.images.max_images, env.images.max_gb) == (3, 1.5)
    assert env.images.state_dir == tmp_path / "envs" / "docker"
    assert dict(installer.env) == {
        "PIP_INDEX_URL": "https://mirror.example/simple",
        "UV_INDEX_URL": "https://uv.example/simple",
    }
    assert (installer.pip_conf, installer.uv_toml) == (pip_conf, uv_toml)
    assert installer.uv_bin == Path(uv.find_uv_bin())  # the agent's, for images without uv
    opts = env.run_options(PREPARED, request(tmp_path, "python", env={"X": "1"}))
    assert (opts["user"], opts["network_mode"]) == (config.docker_user, "none")
    assert installer.user == config.docker_user  # builds run as the tasks do
    assert opts["environment"]["WANDB_MODE"] == "offline"  # the agent's env, for every task
    assert opts["environment"]["X"] == "1"


def test_the_ca_bundle_setting_system_none_or_a_path(tmp_path: Path) -> None:
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    assert ca_bundle_path("system") == (system if system.is_file() else None)
    assert ca_bundle_path("none") is None
    assert ca_bundle_path(str(tmp_path / "ca.pem")) == tmp_path / "ca.pem"
    config = AgentConfig(docker_ca_bundle=str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match=r"absent\.pem is not a file"):
        DockerEnvironment.from_config(offline_client(), config, {})


@pytest.mark.parametrize("bad", ["1000", "me:me", "1000:", ":1000", "1000:1000:1"])
def test_a_malformed_docker_user_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not UID:GID"):
        parse_user(bad)


def test_only_a_root_agent_may_name_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    assert parse_user("1000:1000") == "1000:1000"
    with pytest.raises(ConfigError, match="only an agent running as root"):
        parse_user("0:0")
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert parse_user("4321:4322") == "4321:4322"


def test_installer_files_carry_pip_conf_uv_toml_and_variables(tmp_path: Path) -> None:
    (tmp_path / "pip.conf").write_text("[global]\nindex-url = https://m.example/simple\n")
    (tmp_path / "uv.toml").write_text('index-url = "https://m.example/simple"\n')
    (tmp_path / "uv").write_bytes(b"the agent's uv binary")
    installer = Installer(
        offline_client(),
        builder="a",
        user="4321:4322",
        env={"PIP_TIMEOUT": "60", "UV_HTTP_TIMEOUT": "it's 60"},
        pip_conf=tmp_path / "pip.conf",
        uv_toml=tmp_path / "uv.toml",
        uv_bin=tmp_path / "uv",
    )
    with (
        installer._archive(installer._files("a==1\n")) as archive,
        tarfile.open(fileobj=archive) as tar,
    ):
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        members = tar.getmembers()
    build = BUILD_DIR.strip("/")
    # the install runs as the installer's user: its folders and files are that user's alone
    assert {(m.uid, m.gid) for m in members} == {(4321, 4322)}
    folders = {m.name: m.mode for m in members if m.isdir()}
    assert folders == {IMAGE_DIR.strip("/"): 0o755, build: 0o700}  # no cache volume: no mount
    modes = {m.name: m.mode for m in members if m.isfile()}
    assert modes.pop(f"{build}/uv") == 0o700  # the one file the user runs
    assert set(modes.values()) == {0o600}
    assert files[f"{build}/uv"] == b"the agent's uv binary"
    assert files[f"{build}/pip.conf"] == (tmp_path / "pip.conf").read_bytes()
    assert files[f"{build}/uv.toml"] == (tmp_path / "uv.toml").read_bytes()
    assert files[f"{build}/requirements.txt"] == b"a==1\n"
    assert files[f"{build}/env"].decode().splitlines() == [
        "export PIP_TIMEOUT=60",
        "export UV_HTTP_TIMEOUT='it'\"'\"'s 60'",
        f"export PIP_CONFIG_FILE={BUILD_DIR}/pip.conf",
        f"export UV_CONFIG_FILE={BUILD_DIR}/uv.toml",
    ]
