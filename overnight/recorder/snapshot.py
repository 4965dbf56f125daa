"""Turn a working tree and a command into a :class:`~overnight.spec.Snapshot`.

A snapshot is everything needed to run the command again elsewhere, exactly: the remote and
commit, the patch from HEAD to the working tree (ignored files are not captured), a bundle of the
commits the remote lacks, requirements, Python version, argv, params, chosen env vars and a note.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from overnight.config import ClientConfig
from overnight.errors import (
    EmptyCommandError,
    GitError,
    MetricFileError,
    NoCommitError,
    NotAGitRepoError,
    OutputGlobError,
    SnapshotError,
    SpecError,
)
from overnight.recorder import bundle, patch
from overnight.recorder.commandfiles import RecordedTree, Workdir, script_path
from overnight.recorder.envvars import record_env
from overnight.recorder.gitrepo import Git
from overnight.recorder.interpreter import environment_argv, find_python, python_version
from overnight.recorder.limits import check_total
from overnight.recorder.params import parse_params
from overnight.recorder.requirements import find_requirements
from overnight.recorder.secrets import refuse_secrets_in_patch
from overnight.recorder.submodules import capture_submodules
from overnight.recorder.urls import strip_credentials
from overnight.spec import (
    SUBMODULE_CHANGES_VERSION,
    BlobRef,
    RepoState,
    Snapshot,
    TaskSpec,
    check_path,
)


@dataclass(frozen=True)
class SnapshotOptions:
    """What the user chose on the command line, besides the command itself."""

    requirements_file: Path | None = None
    env: tuple[str, ...] = ()  # "NAME" (value read from environ) or "NAME=VALUE"
    allow_secret_env: bool = False
    allow_secret_files: bool = False
    note: str = ""
    tags: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # globs of output files, relative to the repository root
    metric_files: tuple[str, ...] = ()  # metrics files (CSV, JSON lines), relative to the root
    name: str | None = None
    max_snapshot_mb: float = 20.0
    max_untracked_file_mb: float = 5.0

    @classmethod
    def from_config(
        cls,
        config: ClientConfig,
        *,
        requirements_file: Path | None = None,
        env: Sequence[str] = (),
        allow_secret_env: bool = False,
        allow_secret_files: bool = False,
        note: str = "",
        tags: Sequence[str] = (),
        outputs: Sequence[str] = (),
        metric_files: Sequence[str] = (),
        name: str | None = None,
        max_snapshot_mb: float | None = None,
        max_untracked_file_mb: float | None = None,
    ) -> SnapshotOptions:
        """The user's choices, as ``overnight enqueue`` and the Python API both take them, with
        the settings filling gaps: the ``outputs`` setting's globs come first, and a size limit
        not given is the setting's."""
        return cls(
            requirements_file=requirements_file,
            env=tuple(env),
            allow_secret_env=allow_secret_env,
            allow_secret_files=allow_secret_files,
            note=note,
            tags=tuple(tags),
            outputs=(*config.outputs, *outputs),
            metric_files=tuple(metric_files),
            name=name,
            max_snapshot_mb=config.max_snapshot_mb if max_snapshot_mb is None else max_snapshot_mb,
            max_untracked_file_mb=(
                config.max_untracked_file_mb
                if max_untracked_file_mb is None
                else max_untracked_file_mb
            ),
        )


@dataclass(frozen=True)
class Recording:
    """A snapshot and what recording it saw that the spec does not keep: enqueue's account of it
    (:mod:`overnight.recorder.account`) reads them."""

    snapshot: Snapshot
    git: Git  # at the repository's top level
    workdir: Workdir
    tree: RecordedTree
    changed: int = 0  # files the patch writes
    untracked: tuple[str, ...] = ()  # untracked files recorded
    unpushed_commits: int = 0
    notes: tuple[str, ...] = ()  # what the user should know (a freeze taken, conda packages)


def take_snapshot(
    cwd: Path,
    argv: Sequence[str],
    options: SnapshotOptions,
    environ: Mapping[str, str] | None = None,
) -> Snapshot:
    """Snapshot the repo containing ``cwd`` for running ``argv`` there; raises SnapshotError."""
    return record(cwd, argv, options, environ).snapshot


def record(
    cwd: Path,
    argv: Sequence[str],
    options: SnapshotOptions,
    environ: Mapping[str, str] | None = None,
) -> Recording:
    """:func:`take_snapshot`, with what it saw on the way (no git command more)."""
    env = os.environ if environ is None else environ
    argv = tuple(argv)
    if not argv or not argv[0].strip():
        raise EmptyCommandError(
            "no command to record; put it after --, e.g. overnight snapshot -- python train.py"
        )
    task_env = record_env(options.env, env, allow_secret=options.allow_secret_env)
    cwd = Path(cwd).absolute()
    git, prefix, head = _open_repo(cwd, env)
    try:
        repo, unpushed = _repo_state(git, head)
        tree = patch.capture(
            git,
            max_untracked_file_mb=options.max_untracked_file_mb,
            max_snapshot_mb=options.max_snapshot_mb,
            allow_secret_files=options.allow_secret_files,
        )
        sub_changes = capture_submodules(
            git,
            tree.submodules,
            max_untracked_file_mb=options.max_untracked_file_mb,
            max_snapshot_mb=options.max_snapshot_mb,
            allow_secret_files=options.allow_secret_files,
        )
    except GitError as exc:  # a damaged repository, a full disk: git's own words are the cause
        raise SnapshotError(
            f"cannot record the repository at {git.cwd}: {exc.reason}; check it with git fsck"
        ) from exc
    if not options.allow_secret_files:
        if unpushed:
            refuse_secrets_in_patch(bundle.unpushed_patch(git, repo.remote), unpushed=True)
        refuse_secrets_in_patch(tree.patch)
        for change in sub_changes:
            refuse_secrets_in_patch(change.patch, f"{change.path}/")
    bundle_size = len(unpushed.data) if unpushed else 0
    check_total(
        len(tree.patch) + len(tree.literal) + sum(len(c.patch) for c in sub_changes),
        bundle_size,
        [*tree.changed, *(item for c in sub_changes for item in c.changed)],
        options.max_snapshot_mb,
        bundle_commits=unpushed.commits if unpushed else 0,
    )
    python = find_python(argv, cwd, env)
    version = python_version(python)
    argv, mapped = environment_argv(argv, version)
    where = Workdir(git.cwd / prefix, git.cwd)
    script = script_path(argv, where)
    found = find_requirements(
        cwd, git.cwd, options.requirements_file, python=python,
        start=where.cwd if script is None else script.parent, script=script,
    )  # fmt: skip
    blobs: dict[str, bytes] = {}
    patch_ref = _blob(blobs, tree.patch)
    bundle_ref = _blob(blobs, unpushed.data if unpushed else b"")
    literal_ref = _blob(blobs, tree.literal)
    sub_patches: dict[str, BlobRef] = {}
    for change in sub_changes:
        ref = _blob(blobs, change.patch)
        assert ref is not None  # a changed submodule's patch is never empty
        sub_patches[change.path] = ref
    spec = TaskSpec(
        repo=RepoState(
            commit=repo.commit,
            url=repo.url,
            remote=repo.remote,
            branch=repo.branch,
            dirty=tree.dirty or bool(sub_changes),
            tree=tree.tree,
            submodules=tree.submodules,
            submodule_trees={c.path: c.tree for c in sub_changes},
        ),
        argv=argv,
        python=version,
        requirements=found.requirements,
        workdir=prefix.rstrip("/") or ".",
        patch=patch_ref,
        bundle=bundle_ref,
        submodule_patches=sub_patches,
        literal_files=literal_ref,
        params=parse_params(argv),
        env=task_env,
        note=options.note,
        name=options.name,
        tags=tuple(options.tags),
        outputs=output_globs(options.outputs),
        metric_files=metric_paths(options.metric_files),
        user=_user(env),
        host=socket.gethostname(),
        created=time.time(),
        version=SUBMODULE_CHANGES_VERSION if sub_changes else 1,
    )
    return Recording(
        snapshot=Snapshot(spec=spec, blobs=blobs, notices=(mapped,) if mapped else ()),
        git=git,
        workdir=where,
        tree=RecordedTree(tree.paths, tuple(tree.submodules)),
        changed=len(tree.changed) + sum(len(c.changed) for c in sub_changes),
        untracked=tuple(path for path, _ in tree.untracked),
        unpushed_commits=unpushed.commits if unpushed else 0,
        notes=found.notes,
    )


def output_globs(globs: Sequence[str]) -> tuple[str, ...]:
    """The ``--outputs`` globs as the spec records them: normalised (no ``./``, no trailing
    ``/``), each once; raises OutputGlobError for one that could leave the tree."""
    found: dict[str, None] = {}
    for glob in globs:
        parts = [p for p in glob.strip().split("/") if p not in ("", ".")]
        normal = "/".join(parts)
        try:
            check_path(
                glob.strip()[:1] + normal if glob.strip().startswith("/") else normal, "outputs"
            )
        except SpecError as exc:
            raise OutputGlobError(
                f"--outputs {glob!r} cannot be collected: {exc}; give a glob relative to the "
                "repository root, such as checkpoints/*.pt"
            ) from exc
        found.setdefault(normal)
    return tuple(found)


def metric_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """The ``--metrics`` paths as the spec records them: normalised (no ``./``), each once;
    raises MetricFileError for one that could leave the tree."""
    found: dict[str, None] = {}
    for path in paths:
        text = path.strip()
        normal = "/".join(p for p in text.split("/") if p not in ("", "."))
        try:
            check_path(text[:1] + normal if text.startswith("/") else normal, "metric_files")
        except SpecError as exc:
            raise MetricFileError(
                f"--metrics {path!r} cannot be read: {exc}; give a path relative to the "
                "repository root, such as outputs/metrics.csv (outputs/ is $OVERNIGHT_OUTPUT_DIR)"
            ) from exc
        found.setdefault(normal)
    return tuple(found)


def _blob(blobs: dict[str, bytes], data: bytes) -> BlobRef | None:
    if not data:
        return None
    ref = BlobRef.of(data)
    blobs[ref.sha256] = data
    return ref


@dataclass(frozen=True)
class _Head:
    commit: str
    branch: str | None  # None on a detached HEAD


def _open_repo(cwd: Path, environ: Mapping[str, str]) -> tuple[Git, str, _Head]:
    """A :class:`Git` at the repo's top level, ``cwd`` relative to it (``sub/dir/``) and HEAD,
    from one ``git rev-parse`` (that HEAD is a commit, its id, the branch it is on)."""
    if not cwd.is_dir():
        raise NotAGitRepoError(f"{cwd} is not a directory")
    probe = Git(cwd, environ=environ)
    try:
        out = probe.text(
            "rev-parse", "--show-toplevel", "--show-prefix", "HEAD^{commit}", "HEAD",
            "--abbrev-ref=loose", "HEAD", "--",
        )  # fmt: skip
    except GitError as exc:
        try:
            top = probe.text("rev-parse", "--show-toplevel")
        except GitError:
            raise NotAGitRepoError(
                f"{cwd} is not inside a git work tree; run from your project's repo (git init)"
            ) from exc
        raise NoCommitError(
            f"the repository at {top} has no commit yet; commit your code first (git commit)"
        ) from exc
    top, prefix, _peeled, commit, *rest = out.split("\n")
    git = probe.at(Path(top))
    # No short name printed: git found HEAD ambiguous (a branch named HEAD); ask it otherwise.
    short = rest[0] if len(rest) == 2 else _branch(git)
    return git, prefix, _Head(commit, None if short == "HEAD" else short)  # HEAD: detached


def _branch(git: Git) -> str | None:
    try:
        return git.text("symbolic-ref", "--quiet", "--short", "HEAD")
    except GitError:
        return None


def _remote(git: Git, remotes: Sequence[str], branch: str | None) -> str | None:
    """``origin``, else the branch's upstream remote, else ``upstream``, else the only/first one."""
    if not remotes:
        return None
    if "origin" in remotes:
        return "origin"
    if branch:
        try:
            tracked = git.text("config", "--get", f"branch.{branch}.remote")
        except GitError:
            tracked = ""
        if tracked in remotes:
            return tracked
    return "upstream" if "upstream" in remotes else sorted(remotes)[0]


def _fetch_urls(git: Git) -> dict[str, str | None]:
    """Each remote and its fetch URL (the first, rewritten by ``insteadOf`` as git fetches it),
    from one ``git remote -v``; None where the listing does not tell the URL for sure."""
    lines = git.text("remote", "-v").splitlines()
    if not all("\t" in line for line in lines):  # a URL with a newline in it
        return dict.fromkeys(git.text("remote").split())
    urls: dict[str, str | None] = {}
    for line in lines:
        name, _, entry = line.partition("\t")
        match = _FETCH_ENTRY.fullmatch(entry)
        if urls.get(name) is None:
            urls[name] = match.group(1) if match else None
    return urls


_FETCH_ENTRY = re.compile(r"(.*) \(fetch\)(?: \[[^\]]*\])?")
"""``URL (fetch)``, or ``URL (fetch) [filter]`` for a partial clone, in ``git remote -v``."""


def _remote_url(git: Git, remote: str, listed: str | None) -> str:
    url = listed if listed is not None else git.text("remote", "get-url", remote)
    local = Path(url) if "://" not in url and ":" not in url.split("/", 1)[0] else None
    if local is not None and not local.is_absolute() and (git.cwd / local).exists():
        url = str((git.cwd / local).resolve())
    return strip_credentials(url)


def _repo_state(git: Git, head: _Head) -> tuple[RepoState, bundle.Bundle | None]:
    urls = _fetch_urls(git)
    remote = _remote(git, sorted(urls), head.branch)
    url = _remote_url(git, remote, urls[remote]) if remote else None
    state = RepoState(commit=head.commit, url=url, remote=remote, branch=head.branch)
    return state, bundle.unpushed(git, remote)


def _user(environ: Mapping[str, str]) -> str:
    name = environ.get("USER") or environ.get("LOGNAME")
    if name:
        return name
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""
