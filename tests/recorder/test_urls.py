from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overnight.errors import LocalRepoError
from overnight.recorder.urls import (
    is_network_url,
    require_network_url,
    strip_credentials,
    url_host,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://user:ghp_secret@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://ghp_secret@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://oauth2:glpat-x@gitlab.example/g/r.git", "https://gitlab.example/g/r.git"),
        ("http://u:p@host:8080/r.git", "http://host:8080/r.git"),
        ("https://u:p@[::1]:8443/r.git", "https://[::1]:8443/r.git"),
        ("https://host/r.git?token=abc", "https://host/r.git"),
        ("https://host/r.git?private_token=abc&ref=main", "https://host/r.git?ref=main"),
        ("https://host/r.git?access_token=a&X-Amz-Signature=s", "https://host/r.git"),
        ("https://host/r.git?ref=main", "https://host/r.git?ref=main"),
        ("ssh://git@github.com/org/repo.git", "ssh://git@github.com/org/repo.git"),
        ("ssh://git:hunter2@host:2222/r.git", "ssh://git@host:2222/r.git"),
        ("git+ssh://deploy@host/r.git", "git+ssh://deploy@host/r.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
        ("../sibling.git", "../sibling.git"),
    ],
)
def test_credentials_are_stripped(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["https", "http"]),
    user=_part,
    secret=_part.map(lambda s: "S3CR3T" + s),
    host=_part,
    path=st.lists(_part, min_size=1, max_size=3),
    param=st.sampled_from(["token", "access_token", "private_token", "oauth_token", "password"]),
)
def test_no_secret_survives(
    scheme: str, user: str, secret: str, host: str, path: list[str], param: str
) -> None:
    joined = "/".join(path)
    for url in (
        f"{scheme}://{user}:{secret}@{host}/{joined}.git",
        f"{scheme}://{secret}@{host}/{joined}.git",
        f"{scheme}://{host}/{joined}.git?{param}={secret}",
    ):
        stripped = strip_credentials(url)
        assert "S3CR3T" not in stripped
        assert stripped.startswith(f"{scheme}://{host}/")
        assert strip_credentials(stripped) == stripped


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://github.com/o/r.git", "github.com"),
        ("ssh://git@host.example:22/r.git", "host.example"),
        ("git@gitlab.com:o/r.git", "gitlab.com"),
        ("/srv/git/r.git", ""),
    ],
)
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/repo.git",
        "http://127.0.0.1:8080/r.git",
        "ssh://git@host:2222/r.git",
        "git+ssh://deploy@host/r.git",
        "git://host/r.git",
        "git@github.com:org/repo.git",
        "host:org/repo.git",
        "git@host:/srv/r.git",
        "https://u@[::1]:8443/r.git",
    ],
)
def test_network_urls(url: str) -> None:
    assert is_network_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "/srv/git/repo.git",
        "./repo",
        "../sibling.git",
        "repo",
        "sub/dir:with-colon",
        "~/repo.git",
        "file:///srv/git/repo.git",
        "file://host/srv/repo.git",
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "ftp://host/r.git",
        "https:///r.git",
        "ssh://-oProxyCommand=touch%20x/r.git",
        "-oProxyCommand=x@host:r.git",
    ],
)
def test_local_paths_and_other_transports_are_not_network_urls(url: str) -> None:
    assert not is_network_url(url)
    with pytest.raises(LocalRepoError, match=r"^repo\.url .*\(OVERNIGHT_ALLOW_LOCAL_REPOS=1\)$"):
        require_network_url(url, "repo.url")
