"""Notifications: word of a sweep's end, a task's failure, an agent lost, and the digest.

``targets`` (where a message goes: webhooks, ntfy, e-mail), ``messages`` (what each event says),
``delivery`` (one message sent to one target: HTTP or SMTP), ``notifier`` (the agent's sender:
one message per event however many agents, retried off the task's path), ``schedule`` (when the
digest is due).
"""
