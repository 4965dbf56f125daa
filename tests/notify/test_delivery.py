"""One message to one target, against a real HTTP listener and a real SMTP server."""

from __future__ import annotations

import json

import pytest

from overnight.errors import DeliveryFailed
from overnight.notify.delivery import deliver
from overnight.notify.messages import Message
from overnight.notify.targets import SmtpSettings, parse_target
from tests.fixtures.listeners import Mailbox, Webhook, free_port

MESSAGE = Message(
    title="overnight: sweep 3f ended", text="3 task(s): 3 finished\n<!channel>", key="k"
)


def test_a_slack_webhook_gets_json_text(webhook: Webhook) -> None:
    deliver(parse_target(webhook.url()), MESSAGE, SmtpSettings())
    (request,) = webhook.requests
    assert request.path == "/hook/T000/SECRET"
    assert request.headers["Content-Type"] == "application/json"
    text = json.loads(request.body)["text"]
    assert text.startswith("*overnight: sweep 3f ended*\n3 task(s): 3 finished")
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # a task cannot ping everyone


def test_ntfy_gets_plain_text_with_a_title(webhook: Webhook) -> None:
    titled = Message(title="sweep ended — ok", text="all 3 finished", key="k")
    deliver(parse_target("ntfy+" + webhook.url("/lab-runs")), titled, SmtpSettings())
    (request,) = webhook.requests
    assert request.path == "/lab-runs"
    assert request.headers["Title"] == "sweep ended ? ok"
    assert request.body == b"all 3 finished"


def test_an_http_error_names_the_host_not_the_secret(webhook: Webhook) -> None:
    webhook.statuses = [500]
    with pytest.raises(DeliveryFailed) as caught:
        deliver(parse_target(webhook.url()), MESSAGE, SmtpSettings())
    assert "HTTP 500" in str(caught.value)
    assert "SECRET" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_a_refused_connection_is_a_delivery_failure() -> None:
    target = parse_target(f"http://127.0.0.1:{free_port()}/hook/SECRET")
    with pytest.raises(DeliveryFailed, match=r"127\.0\.0\.1") as caught:
        deliver(target, MESSAGE, SmtpSettings(), timeout=2)
    assert "SECRET" not in str(caught.value)


def test_mail_goes_through_the_smtp_server(mailbox: Mailbox) -> None:
    smtp = SmtpSettings(
        host="127.0.0.1", port=mailbox.port, sender="agents@lab.org", starttls=False
    )
    deliver(parse_target("mailto:me@lab.org,you@lab.org"), MESSAGE, smtp)
    (mail,) = mailbox.messages
    assert mail["Subject"] == "overnight: sweep 3f ended"
    assert mail["From"] == "agents@lab.org"
    assert mailbox.envelopes == [("agents@lab.org", ["me@lab.org", "you@lab.org"])]
    assert "3 task(s): 3 finished" in mail.get_payload()


def test_mail_without_a_server_says_which_setting_is_missing() -> None:
    with pytest.raises(DeliveryFailed, match="smtp_host"):
        deliver(parse_target("mailto:me@lab.org"), MESSAGE, SmtpSettings())


def test_smtp_settings_never_show_the_password() -> None:
    assert "hunter2" not in repr(SmtpSettings(host="mx", user="u", password="hunter2"))
