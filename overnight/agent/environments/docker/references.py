"""Docker's names as the engine takes them, checked when an agent starts rather than per task.

A setting the engine refuses (an image repository with capitals, a shm size docker-py cannot
parse, a volume name with a slash) would fail every task the agent takes, one traceback each;
these checks refuse it at start, in one line naming the setting and an example. The grammar is
the one of distribution/reference (``docker tag``'s), without IPv6 registry hosts.
"""

from __future__ import annotations

import re

import docker.errors
import docker.utils

from overnight.errors import ConfigError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
)
_REPOSITORY = re.compile(rf"(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}"
_IMAGE = re.compile(rf"(?P<name>{_REPOSITORY.pattern})(?::{_TAG})?(?:@{_DIGEST})?")
_VOLUME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_NAME_LIMIT = 255  # characters of a repository name

_REPOSITORY_RULES = (
    "lowercase letters, digits and . _ - between them, parts joined by /, an optional "
    "registry host first"
)


def check_repository(setting: str, value: str) -> str:
    """``value`` if it is an image repository name (no tag): environment images' ``<repo>``."""
    if not _REPOSITORY.fullmatch(value) or len(value) > _NAME_LIMIT:
        raise ConfigError(
            f"{setting} {value!r} is not an image repository name ({_REPOSITORY_RULES}, no "
            f":tag); set {setting} to e.g. overnight-env or registry.example:5000/team/envs"
        )
    return value


def check_image(setting: str, value: str) -> str:
    """``value`` if it is an image reference: ``repository[:tag][@digest]``, or an image id."""
    found = _IMAGE.fullmatch(value)
    if found is None or len(found.group("name")) > _NAME_LIMIT:
        raise ConfigError(
            f"{setting} {value!r} is not an image reference ({_REPOSITORY_RULES}, then :tag); "
            f"set {setting} to e.g. python:3.11-slim or nvcr.io/nvidia/pytorch:24.05-py3"
        )
    return value


def check_volume(setting: str, value: str) -> str:
    """``value`` if Docker takes it as a volume name."""
    if not _VOLUME.fullmatch(value):
        raise ConfigError(
            f"{setting} {value!r} is not a volume name (letters, digits, _ . -, at least two, "
            f"starting with a letter or digit); set {setting} to e.g. overnight-pip-cache"
        )
    return value


def check_size(setting: str, value: str) -> str:
    """``value`` if docker-py parses it as a size (``2g``, ``512m``, bytes)."""
    try:
        docker.utils.parse_bytes(value)
    except (docker.errors.DockerException, ValueError):
        raise ConfigError(
            f"{setting} {value!r} is not a size; set {setting} to e.g. 2g or 512m"
        ) from None
    return value
