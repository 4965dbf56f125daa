"""The digest: `overnight summary` sent by one of the agents when a slot comes, however many
run, with the clock injected and the slot a few seconds ahead."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from overnight.agent.service.windows import FakeClock
from overnight.notify.digest import Digest
from overnight.notify.notifier import Notifier
from overnight.notify.schedule import DigestSchedule
from overnight.queue import keys
from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.agents import Background, agent_config, make_daemon, wait_for
from tests.fixtures.listeners import Mailbox, Webhook
from tests.fixtures.tasks import finish, make_snapshot

BEFORE = datetime(2026, 12, 7, 6, 59, 57)  # a Monday, three seconds before the slot


def test_a_digest_is_sent_once_per_slot_and_only_when_due(
    agent_store: TaskStore, webhook: Webhook
) -> None:
    done = submit(agent_store, make_snapshot(), TaskOptions())
    finish(agent_store, done.id)
    clock = FakeClock(BEFORE)
    notifier = Notifier(agent_store, agent="agent-a", targets=[webhook.url()])
    digest = Digest(DigestSchedule.parse(["mon 07:00"]), notifier, clock.now)
    try:
        assert not digest.tick()  # not yet: the last slot, a week ago, is long past
        clock.advance(seconds=4)
        assert digest.tick()
        assert not digest.tick()  # the same slot
    finally:
        notifier.close()
    (text,) = webhook.texts()
    assert text.startswith("*overnight: summary for Mon 2026-12-07 07:00*")
    assert "since Mon 2026-11-30 07:00: 1 task: 1 finished" in text
    assert done.id[:12] in text


@pytest.mark.slow
def test_two_agents_send_one_digest_by_mail(
    agent_store: TaskStore,
    mailbox: Mailbox,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
) -> None:
    done = submit(agent_store, make_snapshot(), TaskOptions())
    finish(agent_store, done.id)
    clock = FakeClock(BEFORE)
    settings = {
        "digest": ("mon 07:00",),
        "notify": ("mailto:lab@example.org",),
        "smtp_host": "127.0.0.1",
        "smtp_port": mailbox.port,
        "smtp_from": "agents@example.org",
        "smtp_starttls": False,
    }
    agents = [
        Background(
            make_daemon(
                agent_config(redis_url, tmp_path / n, venv_cache, name=f"agent-{n}", **settings),
                clock=clock,
            )
        )
        for n in "ab"
    ]
    try:
        names = [keys.agent(f"agent-{n}") for n in "ab"]
        wait_for(lambda: agent_store.redis.exists(*names) == 2, what="both agents")
        clock.advance(seconds=4)
        wait_for(lambda: mailbox.messages, what="the digest")
    finally:
        for agent in agents:
            agent.stop()
    (mail,) = mailbox.messages
    assert mail["Subject"] == "overnight: summary for Mon 2026-12-07 07:00"
    assert mailbox.envelopes == [("agents@example.org", ["lab@example.org"])]
    assert done.id[:12] in mail.get_payload()
    assert agent_store.redis.get(keys.notified("digest:Mon 2026-12-07 07:00")) in (
        b"agent-a",
        b"agent-b",
    )
