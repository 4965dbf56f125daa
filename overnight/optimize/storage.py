"""Optuna's side of a study: its storage, sampler and pruner, made from a study's settings.

The study lives where Optuna's own tools read it: by default in Optuna's Redis journal on
overnight's Redis (keys under ``overnight:optuna``), else in the storage URL given (``sqlite:///``,
``postgresql://``...), so ``optuna-dashboard`` and ``optuna.load_study`` work on it. This is the
one module that imports optuna at its top; the CLI imports it only when ``optimize`` runs,
after :func:`overnight.optimize.installed.require_optuna`.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalRedisBackend, JournalStorage

from overnight.optimize.settings import StudySettings
from overnight.optimize.space import grid
from overnight.queue import keys


class _RedisBackend(JournalRedisBackend):
    """Optuna's Redis journal with a way to close its connections."""

    def close(self) -> None:
        self._redis.close()


class StudyStorage:
    """An open Optuna storage; :meth:`close` ends its Redis connections (a URL's are Optuna's)."""

    def __init__(self, redis_url: str, url: str | None = None) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._backend: _RedisBackend | None = None
        self.storage: BaseStorage | str
        if url is None:
            with warnings.catch_warnings():  # the Redis journal is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._backend = _RedisBackend(redis_url, prefix=keys.OPTUNA_JOURNAL)
                self.storage = JournalStorage(self._backend)
        else:
            self.storage = url

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def __enter__(self) -> StudyStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, settings: StudySettings) -> optuna.Study:
        """A new study of ``settings.name``; raises :class:`optuna.exceptions.DuplicatedStudyError`
        when the storage has one."""
        return optuna.create_study(
            storage=self.storage,
            study_name=settings.name,
            direction=optuna.study.StudyDirection[settings.direction.upper()],
            sampler=sampler(settings),
            pruner=pruner(settings),
        )

    def load(self, settings: StudySettings) -> optuna.Study:
        return optuna.load_study(
            study_name=settings.name,
            storage=self.storage,
            sampler=sampler(settings),
            pruner=pruner(settings),
        )


def sampler(settings: StudySettings) -> Any:
    """The settings' sampler (TPE's constant liar on: trials in flight steer the next ones)."""
    seed = settings.seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
        if settings.sampler == "grid":
            return _AskAndTellGrid(dict(grid(settings.space)), seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class _AskAndTellGrid(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is used up, which only
    ``study.optimize`` allows: the driver stops at ``--trials``, capped at the grid's size."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        pass


def pruner(settings: StudySettings) -> Any:
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
