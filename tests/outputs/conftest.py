from __future__ import annotations

from tests.fixtures.sshd import sshd

__all__ = ["sshd"]
