from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overnight.recorder.urls import strip_credentials, url_host


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
