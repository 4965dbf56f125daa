"""Notify targets: webhooks, ntfy and mailto parsed; a webhook's secret path never shown."""

from __future__ import annotations

import pytest

from overnight.errors import NotifyTargetError
from overnight.notify.targets import MAIL, NTFY, SLACK, parse_target, parse_targets, redacted


def test_each_kind_of_target_is_read() -> None:
    slack = parse_target("https://hooks.slack.com/services/T0/B0/s3cret")
    assert (slack.kind, slack.url) == (SLACK, "https://hooks.slack.com/services/T0/B0/s3cret")
    ntfy = parse_target("ntfy+https://ntfy.sh/lab-runs")
    assert (ntfy.kind, ntfy.url) == (NTFY, "https://ntfy.sh/lab-runs")
    mail = parse_target("mailto:me@lab.org, you@lab.org")
    assert (mail.kind, mail.addresses) == (MAIL, ("me@lab.org", "you@lab.org"))


def test_a_webhook_is_shown_by_its_host_only() -> None:
    target = parse_target("https://user:pw@hooks.slack.com/services/T0/B0/s3cret?x=1")
    assert target.shown == "https://hooks.slack.com/…"
    assert "s3cret" not in target.shown and "pw" not in target.shown
    assert parse_target("ntfy+http://127.0.0.1:8080/topic").shown == "ntfy+http://127.0.0.1:8080/…"
    assert parse_target("mailto:me@lab.org").shown == "mailto:me@lab.org"
    assert redacted("https://example.org") == "https://example.org"


@pytest.mark.parametrize(
    "text",
    [
        "hooks.slack.com/services/x",
        "ftp://example.org/x",
        "mailto:",
        "mailto:not-an-address",
        "https://example.org/a b",
        "https:///path-only",
    ],
)
def test_what_is_no_target_is_refused_without_its_secret(text: str) -> None:
    with pytest.raises(NotifyTargetError) as caught:
        parse_target(text)
    assert "/x" not in str(caught.value) and "path-only" not in str(caught.value)


def test_targets_are_kept_once() -> None:
    found = parse_targets(["https://a.org/h", " https://a.org/h", "mailto:me@lab.org"])
    assert [t.kind for t in found] == [SLACK, MAIL]
