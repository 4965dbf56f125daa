from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from overnight.errors import OptimizeError, StudyNotFound, UsageError
from overnight.optimize import settings as stored
from overnight.optimize.settings import StudySettings
from overnight.queue import keys
from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from tests.fixtures.studies import settings_for


def test_settings_round_trip_through_redis(redis_client: redis.Redis) -> None:
    settings = settings_for(
        "s1", "lr=loguniform:1e-05:0.1", "bs=choice:32,64", "amp=choice:true,false",
        reduce="min", seed=4, detached=True, flags=("amp",),
        options=TaskOptions(queue="gpu", gpus=1, timeout=60.0, retries=2, grace=5.0),
    )  # fmt: skip
    stored.save(redis_client, settings)
    assert stored.load(redis_client, "s1") == settings
    assert redis_client.sismember(keys.DETACHED_STUDIES, "s1")
    stored.save(redis_client, StudySettings(**{**settings.__dict__, "detached": False}))
    assert not redis_client.sismember(keys.DETACHED_STUDIES, "s1")


def test_the_study_name_names_its_sweep(redis_client: redis.Redis) -> None:
    settings = settings_for("named", "x=float:0:1")
    stored.save(redis_client, settings)
    assert TaskStore(redis_client).resolve_sweep("named") == settings.sweep


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"trials": "many"}, "expected int"),
        ({"sampler": "bayes"}, "--sampler 'bayes'"),
        ({"params": ["x=gauss:0:1"]}, "invalid --param"),
        ({"spellings": {"x": "--x; rm -rf /"}}, "not an option name"),
        ({"sweep": "../../etc"}, "hex digits"),
        ({"flags": ["y"]}, "not all params"),
        ({"options": {"queue": 3, "gpus": 0, "retries": 0}}, "expected str"),
    ],
)
def test_malformed_settings_are_refused(
    redis_client: redis.Redis, change: dict[str, Any], says: str
) -> None:
    data = json.loads(settings_for("bad", "x=float:0:1").to_json())
    data.update(change)
    redis_client.set(keys.study("bad"), json.dumps(data))
    with pytest.raises(OptimizeError, match=says):
        stored.load(redis_client, "bad")


def test_an_unknown_or_unsafe_name_is_not_found(redis_client: redis.Redis) -> None:
    with pytest.raises(StudyNotFound, match="no study named 'nope'"):
        stored.load(redis_client, "nope")
    with pytest.raises(StudyNotFound):
        stored.load(redis_client, "../x")
    with pytest.raises(UsageError, match="invalid study name"):
        settings_for("a b", "x=float:0:1")
