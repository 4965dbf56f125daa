"""An RQ worker that runs nothing but overnight jobs, for a plain ``rq worker -w``."""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import Worker

from overnight.queue.jobs import fail_in_rq, is_overnight_job, record_refusal, refusal_message
from overnight.queue.upkeep import clean

log = logging.getLogger(__name__)


class TaskWorker(Worker):
    """An RQ worker that runs nothing but overnight jobs; any other job is recorded as failed.

    The check happens in the worker process before any fork, so a refused job's function is never
    imported. Serializes as JSON by default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(*args, **kwargs)

    def execute_job(self, job: Job, queue: Queue) -> None:
        if is_overnight_job(job):
            super().execute_job(job, queue)
        else:
            self.refuse(job, queue)

    def refuse(self, job: Job, queue: Queue) -> None:
        """Record ``job`` as failed in RQ (and on its task record) without running it."""
        message = refusal_message(job)
        log.warning("%s", message)
        record_refusal(job, message)
        queue.intermediate_queue.remove(job.id)
        fail_in_rq(self.connection, str(job.id), queue.name, message, worker_name=self.name)
        with self.connection.pipeline() as pipe:
            self.increment_failed_job_count(pipe)
            pipe.execute()

    def clean_registries(self) -> None:
        """Overnight's registry upkeep instead of RQ's, which runs what stale jobs name."""
        clean(self.connection, [q.name for q in self.queues], worker_name=self.name)
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ types it None
