"""One message sent to one target: a webhook or ntfy POST, or an e-mail over SMTP.

Errors are :class:`DeliveryFailed` naming the target as :attr:`Target.shown` (never a webhook's
secret path, never the SMTP password).
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage

from overnight.errors import DeliveryFailed
from overnight.notify.messages import Message
from overnight.notify.targets import MAIL, NTFY, SmtpSettings, Target

TIMEOUT = 10.0  # seconds for one attempt to connect and send


def deliver(target: Target, message: Message, smtp: SmtpSettings, timeout: float = TIMEOUT) -> None:
    """Send ``message`` to ``target`` once; raises :class:`DeliveryFailed`."""
    try:
        if target.kind == MAIL:
            _mail(target, message, smtp, timeout)
        else:
            _post(target, message, timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # its response holds the connection
        raise DeliveryFailed(f"{target.shown} answered HTTP {exc.code}") from None
    except (OSError, smtplib.SMTPException) as exc:  # URLError, refused, timed out, TLS
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DeliveryFailed(f"{target.shown}: {type(exc).__name__}: {reason}") from None


def _post(target: Target, message: Message, timeout: float) -> None:
    if target.kind == NTFY:
        body = message.text.encode()
        headers = {
            "Title": message.title.encode("ascii", "replace").decode("ascii"),
            "Content-Type": "text/plain; charset=utf-8",
        }
    else:
        text = f"*{_slack_escape(message.title)}*\n{_slack_escape(message.text)}"
        body = json.dumps({"text": text}).encode()
        headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def _slack_escape(text: str) -> str:
    """Slack's three control characters: a task's text must not ping ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mail(target: Target, message: Message, smtp: SmtpSettings, timeout: float) -> None:
    if not smtp.host:
        raise DeliveryFailed(
            f"{target.shown}: the agent has no smtp_host; set it (and smtp_from) in the agent's "
            "settings to send e-mail"
        )
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = smtp.sender or f"overnight@{socket.getfqdn()}"
    mail["To"] = ", ".join(target.addresses)
    mail.set_content(message.text)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        client.send_message(mail)
