"""The output_store setting: what is accepted, and how a store's URL is shown."""

from __future__ import annotations

import pytest

from overnight.errors import ConfigError
from overnight.outputs.locations import check_output_store, public_store_url


@pytest.mark.parametrize(
    "value",
    [
        None,
        "redis",
        "file:///mnt/shared/overnight",
        "file://localhost/mnt/shared",
        "sftp://storage/srv/overnight",
        "sftp://alice@storage:2222/srv/overnight?key_filename=/k&known_hosts=/kh",
        "s3://bucket",
        "s3://bucket/prefix",
    ],
)
def test_stores_this_version_opens_are_accepted(value: str | None) -> None:
    check_output_store(value)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("ftp://host/path", "is not 'redis' or a file://, sftp:// or s3:// URL"),
        ("/mnt/shared/overnight", "is not 'redis'"),
        ("redis://localhost:6379/0", "is not 'redis'"),
        ("file://nas/share", "names a host"),
        ("file:///", "names no folder"),
        ("sftp:///srv/overnight", "names no host"),
        ("sftp://storage", "names no folder"),
        ("sftp://storage:port/x", "invalid port"),
        ("s3:///prefix", "names no bucket"),
        ("sftp://storage/x?identity=/k", "unknown option.*identity.*only key_filename"),
        ("file:///x?mode=1", "takes none"),
    ],
)
def test_other_values_are_one_clear_config_error(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        check_output_store(value)
    assert "\n" not in str(caught.value)


def test_a_bad_value_is_shown_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        check_output_store("sftp://alice:hunter2@storage")
    assert "hunter2" not in str(caught.value)
    assert "sftp://alice@storage" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sftp://alice:hunter2@storage:22/srv", "sftp://alice@storage:22/srv"),
        (
            "sftp://storage/srv?key_filename=/k&known_hosts=/kh",
            "sftp://storage/srv?known_hosts=%2Fkh",
        ),
        ("s3://AKIA:secret@bucket/prefix", "s3://bucket/prefix"),
        ("file:///mnt/shared", "file:///mnt/shared"),
    ],
)
def test_a_store_is_shown_without_credentials(url: str, shown: str) -> None:
    assert public_store_url(url) == shown
