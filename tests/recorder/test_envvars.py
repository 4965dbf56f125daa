from __future__ import annotations

import pytest

from overnight.errors import EnvVarError, SecretEnvError
from overnight.recorder.envvars import record_env


def test_names_take_values_from_environ_and_pairs_are_literal() -> None:
    env = record_env(["SEED", "MODE=fast", "EMPTY="], {"SEED": "7", "MODE": "slow"})
    assert env == {"SEED": "7", "MODE": "fast", "EMPTY": ""}


def test_only_named_variables_are_recorded() -> None:
    assert record_env([], {"HOME": "/root", "SEED": "1"}) == {}


@pytest.mark.parametrize(
    "entry",
    [
        "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD=x", "wandb_api_key=x", "DB_PASS=x",
        "PASSWD=x", "GH_PAT=x", "AUTH=x", "GOOGLE_CREDENTIALS=x", "SESSION=x", "COOKIE=x",
        "PRIVATE=x", "DATABASE_URL=postgres://app:hunter2@db/prod", "GH=ghp_" + "a" * 36,
    ],
)  # fmt: skip
def test_secret_looking_names_are_refused_unless_allowed(entry: str) -> None:
    environ = {"HF_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "k"}
    with pytest.raises(SecretEnvError, match="--allow-secret-env"):
        record_env([entry], environ)
    name = entry.split("=")[0]
    assert name in record_env([entry], environ, allow_secret=True)


def test_refusal_says_why_the_value_looks_secret() -> None:
    with pytest.raises(
        SecretEnvError,
        match=r"--env DATABASE_URL looks like a secret \(its value "
        r"holds a password in a URL\)",
    ):
        record_env(["DATABASE_URL"], {"DATABASE_URL": "postgres://app:pw@db/prod"})


def test_unset_variable_names_the_fix() -> None:
    with pytest.raises(EnvVarError, match=r"SEED is not set here; set it or pass --env SEED=VALUE"):
        record_env(["SEED"], {})


@pytest.mark.parametrize("entry", ["=1", "1ABC=2", "A-B", "A B=1"])
def test_malformed_entries_are_refused(entry: str) -> None:
    with pytest.raises(EnvVarError, match="not a variable name"):
        record_env([entry], {})
