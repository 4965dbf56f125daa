"""overnight: queue ML experiments from a laptop; GPU machines run them exactly as they were."""

from overnight.api import enqueue, get
from overnight.errors import OvernightError
from overnight.spec import Snapshot, TaskSpec

__all__ = ["OvernightError", "Snapshot", "TaskSpec", "enqueue", "get"]
__version__ = "0.1.0"
