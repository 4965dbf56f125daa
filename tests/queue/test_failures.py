"""Failure kinds: --retry-on's values, the cap on --retries, which endings run again."""

from __future__ import annotations

import pytest

from overnight.errors import UsageError
from overnight.queue.failures import (
    DEFAULT_RETRY_ON,
    MAX_RETRIES,
    FailureKind,
    check_retries,
    kind_of_phase,
    parse_retry_on,
    retried,
)


def test_retry_on_reads_kinds_once_each_in_order() -> None:
    assert parse_retry_on("infra,oom") == ("infra", "oom")
    assert parse_retry_on(" RUN , run,setup") == ("run", "setup")
    assert parse_retry_on(["infra", "oom,run"]) == ("infra", "oom", "run")
    assert parse_retry_on("all") == tuple(k.value for k in FailureKind)


@pytest.mark.parametrize("text", ["network", "infra,bogus", "", ","])
def test_retry_on_refuses_what_is_no_kind(text: str) -> None:
    with pytest.raises(UsageError, match="--retry-on"):
        parse_retry_on(text)


def test_retries_are_capped() -> None:
    check_retries(0)
    check_retries(MAX_RETRIES)
    for bad in (-1, MAX_RETRIES + 1):
        with pytest.raises(UsageError, match=f"0 to {MAX_RETRIES}"):
            check_retries(bad)


def test_only_infrastructure_is_retried_by_default() -> None:
    assert DEFAULT_RETRY_ON == ("infra",)
    assert retried(FailureKind.INFRA, DEFAULT_RETRY_ON, attempt=0, retries=2)
    assert not retried(FailureKind.RUN, DEFAULT_RETRY_ON, attempt=0, retries=2)
    assert not retried(FailureKind.OOM, DEFAULT_RETRY_ON, attempt=0, retries=2)
    assert retried(FailureKind.OOM, ("infra", "oom"), attempt=0, retries=2)


def test_retries_end_at_their_count_and_at_the_cap() -> None:
    assert retried(FailureKind.RUN, ("run",), attempt=1, retries=2)
    assert not retried(FailureKind.RUN, ("run",), attempt=2, retries=2)
    assert not retried(FailureKind.RUN, ("run",), attempt=MAX_RETRIES, retries=MAX_RETRIES + 5)


def test_a_phase_says_the_kind_when_nothing_else_does() -> None:
    assert kind_of_phase("workspace") is FailureKind.SETUP
    assert kind_of_phase("environment") is FailureKind.SETUP
    assert kind_of_phase("run") is FailureKind.RUN
    assert kind_of_phase("agent") is FailureKind.INFRA
    assert kind_of_phase(None) is FailureKind.INFRA
