"""The task spec: everything needed to run a recorded command again, exactly.

A spec is a versioned, typed dataclass with a JSON form. Large binary parts (the patch and the
bundle) are not inside the spec but referenced by sha256 (:class:`BlobRef`); a :class:`Snapshot`
pairs a spec with the bytes of its blobs. ``overnight snapshot --json`` writes a snapshot with
the blobs inlined (base64); in Redis the blobs are stored once each, content-addressed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from overnight.errors import SpecError

SPEC_VERSION = 2  # the newest schema this code reads
#: Specs carrying changes inside submodules are version 2: an older agent, which would ignore
#: them and run other code than recorded, refuses them. All other specs stay version 1.
SUBMODULE_CHANGES_VERSION = 2

_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # sha1 or sha256 repositories
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PYTHON = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?[0-9A-Za-z.+]*")  # 3.11.7, 3.13.0rc1, 3.14.0a1+
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


@dataclasses.dataclass(frozen=True)
class BlobRef:
    """A content-addressed binary part of a task (a patch or a bundle)."""

    sha256: str
    size: int

    @classmethod
    def of(cls, data: bytes) -> BlobRef:
        return cls(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


@dataclasses.dataclass(frozen=True)
class RepoState:
    """Where the code came from: remote, commit, branch."""

    commit: str
    url: str | None = None  # remote URL with credentials stripped; None when there is no remote
    remote: str | None = None  # name of the remote the URL came from (origin, upstream, ...)
    branch: str | None = None  # None on a detached HEAD
    dirty: bool = False
    tree: str | None = None  # git tree id of the recorded working tree (HEAD + patch)
    submodules: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> commit
    # path -> tree id of a submodule's recorded working tree, for those with changes (any depth)
    submodule_trees: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What the environment needs, and where that list came from."""

    # "file", "uv.lock", "poetry.lock", "Pipfile.lock", "requirements.txt", "environment.yml",
    # "pyproject.toml", "freeze" or "none"
    source: str
    text: str = ""
    path: str | None = None  # repo-relative path of the file it was read from, if any


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A recorded task: the code, the environment and the command, as they were."""

    repo: RepoState
    argv: tuple[str, ...]
    python: str  # major.minor.micro of the recording interpreter
    requirements: Requirements
    workdir: str = "."  # relative to the repo root, POSIX separators
    patch: BlobRef | None = None
    bundle: BlobRef | None = None
    # path -> patch from a submodule's commit to its working tree (see RepoState.submodule_trees)
    submodule_patches: dict[str, BlobRef] = dataclasses.field(default_factory=dict)
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""
    name: str | None = None
    tags: tuple[str, ...] = ()
    # globs of output files to collect besides the output folder, relative to the repo root
    outputs: tuple[str, ...] = ()
    # metrics files the agent reads as they grow (CSV or JSON lines), relative to the repo root
    metric_files: tuple[str, ...] = ()
    user: str = ""
    host: str = ""
    created: float = 0.0  # unix time
    version: int = 1

    def blob_refs(self) -> list[BlobRef]:
        """Every blob the spec references, each once: patch, bundle and submodule patches (two
        identical patches are one blob)."""
        refs = [ref for ref in (self.patch, self.bundle) if ref is not None]
        refs += [self.submodule_patches[path] for path in sorted(self.submodule_patches)]
        unique: dict[str, BlobRef] = {}
        for ref in refs:
            unique.setdefault(ref.sha256, ref)
        return list(unique.values())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["argv"] = list(self.argv)
        data["tags"] = list(self.tags)
        data["outputs"] = list(self.outputs)
        if not self.outputs:
            del data["outputs"]  # a spec without globs reads as before to older agents
        data["metric_files"] = list(self.metric_files)
        if not self.metric_files:
            del data["metric_files"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Validate and build a spec; raises :class:`SpecError` naming the problem."""
        if not isinstance(data, Mapping):
            raise SpecError(f"task spec must be a JSON object, not {type(data).__name__}")
        version = data.get("version")
        if not isinstance(version, int):
            raise SpecError("task spec has no integer 'version'; it was not written by overnight")
        if version > SPEC_VERSION:
            raise SpecError(
                f"task spec has schema version {version}, newer than this overnight understands "
                f"({SPEC_VERSION}); upgrade overnight on this machine"
            )
        try:
            repo = RepoState(**_typed(data["repo"], RepoState))
            reqs = Requirements(**_typed(data["requirements"], Requirements))
            patch = BlobRef(**data["patch"]) if data.get("patch") else None
            bundle = BlobRef(**data["bundle"]) if data.get("bundle") else None
            sub_patches = _blob_dict(data.get("submodule_patches", {}), "submodule_patches")
            for path, ref in sub_patches.items():
                check_path(path, "submodule_patches")
                _check_blob(ref, "submodule_patches", path)
            _check_repo(repo)
            if reqs.path is not None:
                check_path(_str(reqs.path, "requirements.path"), "requirements.path")
            for field, blob in (("patch", patch), ("bundle", bundle)):
                if blob is not None:
                    _check_blob(blob, field)
            if set(sub_patches) != set(repo.submodule_trees):
                raise SpecError("task spec's submodule patches and trees name different paths")
            workdir = _str(data.get("workdir", "."), "workdir")
            if workdir != ".":
                check_path(workdir, "workdir")
            outputs = tuple(_str_list(data.get("outputs", []), "outputs"))
            for pattern in outputs:
                check_path(pattern, "outputs")
            metric_files = tuple(_str_list(data.get("metric_files", []), "metric_files"))
            for path in metric_files:
                check_path(path, "metric_files")
            argv = tuple(_str_list(data["argv"], "argv"))
            if not argv:
                raise SpecError("task spec has an empty command (argv)")
            return cls(
                repo=repo,
                argv=argv,
                python=_check_python(_str(data["python"], "python")),
                requirements=reqs,
                workdir=workdir,
                patch=patch,
                bundle=bundle,
                submodule_patches=sub_patches,
                params=_str_dict(data.get("params", {}), "params"),
                env=_str_dict(data.get("env", {}), "env"),
                note=_str(data.get("note", ""), "note"),
                name=data.get("name"),
                tags=tuple(_str_list(data.get("tags", []), "tags")),
                outputs=outputs,
                metric_files=metric_files,
                user=_str(data.get("user", ""), "user"),
                host=_str(data.get("host", ""), "host"),
                created=float(data.get("created", 0.0)),
                version=version,
            )
        except KeyError as exc:
            raise SpecError(f"task spec is missing the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise SpecError(f"task spec is malformed: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskSpec:
        return cls.from_dict(_parse_json(text, "task spec"))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A spec together with the bytes of the blobs it references."""

    spec: TaskSpec
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)  # sha256 -> bytes

    def blob(self, ref: BlobRef | None) -> bytes | None:
        if ref is None:
            return None
        try:
            return self.blobs[ref.sha256]
        except KeyError as exc:
            raise SpecError(f"snapshot lacks the blob {ref.sha256[:12]} it references") from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by ``overnight snapshot --json``: the spec plus inlined blobs."""
        data = self.spec.to_dict()
        data["blobs"] = {
            sha: base64.b64encode(raw).decode("ascii") for sha, raw in self.blobs.items()
        }
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        raw_blobs = data.get("blobs", {}) if isinstance(data, Mapping) else {}
        spec = TaskSpec.from_dict({k: v for k, v in data.items() if k != "blobs"})
        blobs: dict[str, bytes] = {}
        if not isinstance(raw_blobs, Mapping):
            raise SpecError("snapshot 'blobs' must be an object of sha256 -> base64")
        for sha, encoded in raw_blobs.items():
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (ValueError, TypeError) as exc:
                raise SpecError(f"snapshot blob {sha[:12]} is not valid base64") from exc
            if hashlib.sha256(raw).hexdigest() != sha:
                raise SpecError(
                    f"snapshot blob {sha[:12]} does not match its sha256; the file is corrupt"
                )
            blobs[sha] = raw
        snap = cls(spec=spec, blobs=blobs)
        for ref in spec.blob_refs():
            snap.blob(ref)
        return snap

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        return cls.from_dict(_parse_json(text, "snapshot"))


def _parse_json(text: str | bytes, what: str) -> Any:
    """``text`` as JSON; a :class:`SpecError` that says it is unreadable and why, in words
    (not "'utf-8' codec can't decode byte 0x80"), when it is not."""
    fix = "enqueue the task again (or record the snapshot again)"
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(
                f"{what} is unreadable: it is not text but binary data (byte {exc.start} of "
                f"{len(exc.object)}); {fix}"
            ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SpecError(f"{what} is unreadable: it is not valid JSON ({exc}); {fix}") from exc


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"task spec field {name!r} must be a string")
    return value


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"task spec field {name!r} must be a list of strings")
    return value


def _str_dict(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"task spec field {name!r} must be an object of strings")
    return dict(value)


def _blob_dict(value: Any, name: str) -> dict[str, BlobRef]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()
    ):
        raise SpecError(f"task spec field {name!r} must be an object of blob references")
    return {k: BlobRef(**v) for k, v in value.items()}


def check_path(path: str, field: str) -> None:
    """Refuse a path from a spec that could name anything but a file inside the rebuilt tree.

    A spec's paths are relative to the repository root, POSIX, normalised (no empty, ``.`` or
    ``..`` component), free of backslashes and control characters, and never inside a ``.git``
    folder (compared case-insensitively, as git does on case-insensitive file systems).
    """
    cause = _path_fault(path)
    if cause:
        raise SpecError(
            f"task spec field {field!r} names the path {path!r}, which {cause}; a spec's paths "
            "are relative to the repository root and stay inside it"
        )


def _path_fault(path: str) -> str | None:
    if not path:
        return "is empty"
    if _CONTROL.search(path):
        return "holds a control character"
    if "\\" in path:
        return "holds a backslash"
    if path.startswith("/"):
        return "is absolute"
    for part in path.split("/"):
        if part in ("", "."):
            return "is not normalised (an empty or '.' component)"
        if part == "..":
            return "climbs out through '..'"
        if part.lower() == ".git":
            return "reaches into a .git folder"
    return None


def _check_repo(repo: RepoState) -> None:
    _check_id(repo.commit, "repo.commit")
    if repo.tree is not None:
        _check_id(repo.tree, "repo.tree")
    if repo.branch is not None:
        _check_branch(repo.branch)
    for field, ids in (
        ("repo.submodules", repo.submodules),
        ("repo.submodule_trees", repo.submodule_trees),
    ):
        for path, object_id in _str_dict(ids, field).items():
            check_path(path, field)
            _check_id(object_id, field, path)


def _check_id(value: Any, field: str, key: str | None = None) -> None:
    if not isinstance(value, str) or not _OBJECT_ID.fullmatch(value):
        raise SpecError(
            f"task spec field {_name(field, key)} must be a git object id "
            f"(40 or 64 lowercase hex digits), not {value!r}"
        )


def _check_branch(branch: Any) -> None:
    """Refuse what ``git check-ref-format --branch`` refuses, and names git would read as an
    option (a leading ``-``)."""
    if not isinstance(branch, str):
        raise SpecError("task spec field 'repo.branch' must be a string")
    parts = branch.split("/")
    if (
        not branch
        or branch.startswith("-")
        or branch in ("HEAD", "@")
        or _REF_FORBIDDEN.search(branch)
        or branch.endswith((".", "/"))
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        raise SpecError(
            f"task spec field 'repo.branch' is {branch!r}, which is not a valid git branch name"
        )


def _check_blob(ref: BlobRef, field: str, key: str | None = None) -> None:
    if not isinstance(ref.sha256, str) or not _SHA256.fullmatch(ref.sha256):
        raise SpecError(
            f"task spec field {_name(field, key)} must name its blob by sha256 "
            f"(64 lowercase hex digits), not {ref.sha256!r}"
        )
    if not isinstance(ref.size, int) or isinstance(ref.size, bool) or ref.size < 0:
        raise SpecError(
            f"task spec field {_name(field, key)} has the size {ref.size!r}, not a count of bytes"
        )


def _name(field: str, key: str | None) -> str:
    return repr(field) if key is None else f"{field!r} at {key!r}"


def _check_python(version: str) -> str:
    if not _PYTHON.fullmatch(version):
        raise SpecError(
            f"task spec field 'python' is {version!r}, not a Python version (major.minor.micro)"
        )
    return version


def _typed(value: Any, cls: type) -> dict[str, Any]:
    """Keep only the fields ``cls`` knows, so older agents tolerate additive fields."""
    if not isinstance(value, Mapping):
        raise SpecError(f"task spec field for {cls.__name__} must be an object")
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in value.items() if k in names}
