"""Environments a task runs in, chosen by name: ``venv`` or ``docker``."""
