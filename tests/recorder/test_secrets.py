from __future__ import annotations

import pytest

from overnight.errors import SecretFileError
from overnight.recorder.secrets import (
    MASK,
    masked_env,
    refuse_secret_files,
    secret_env,
    secret_file,
    secret_value,
    secret_word,
)


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "wandb_api_key", "DB_PASS",
        "MYSQL_PASSWD", "GH_PAT", "AUTH", "BASIC_AUTH", "GOOGLE_APPLICATION_CREDENTIALS",
        "SSH_PRIVATE_KEY", "SESSION_ID", "COOKIE", "DB_PWD", "APIKEY", "SENTRY_DSN",
    ],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    assert secret_word(name)


@pytest.mark.parametrize("name", ["SEED", "MODE", "CUDA_VISIBLE_DEVICES", "PWD", "PATH", "EPOCHS"])
def test_ordinary_names(name: str) -> None:
    assert secret_word(name) is None


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("postgres://app:hunter2@db.example/prod", "a password in a URL"),
        ("redis://:hunter2@cache:6379/0", "a password in a URL"),
        ("https://ghp_abc@github.com/org/r.git", "a token in a URL"),
        ("ghp_" + "a" * 36, "a GitHub token"),
        ("github_pat_" + "a" * 40, "a GitHub token"),
        ("glpat-" + "a" * 20, "a GitLab token"),
        ("xoxb-1234567890-abcdef", "a Slack token"),
        ("sk-" + "A1" * 20, "an API key"),
        ("AKIAIOSFODNN7EXAMPLE", "an AWS access key"),
        ("hf_" + "x" * 34, "a Hugging Face token"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", "a JWT"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc", "a private key"),
    ],
)
def test_secret_values(value: str, what: str) -> None:
    assert secret_value(value) == what
    assert secret_env("DATABASE_URL", value) == f"its value holds {what}"


@pytest.mark.parametrize(
    "value", ["7", "fast", "https://pypi.org/simple", "http://host:8080/a@b", "task-1", "sk-1"]
)
def test_ordinary_values(value: str) -> None:
    assert secret_value(value) is None


@pytest.mark.parametrize(
    "path",
    [
        ".env", "conf/.env.local", "prod.env", ".netrc", ".pgpass", "certs/server.pem",
        "tls.key", "id_rsa", "keys/id_ed25519.pub", "credentials.json",
        "gcp/credentials-prod.json", "service-account.json", ".npmrc", ".pypirc", "CREDENTIALS",
    ],
)  # fmt: skip
def test_secret_files(path: str) -> None:
    assert secret_file(path)


@pytest.mark.parametrize(
    "path", ["train.py", ".env.example", "envs/README.md", "keys.py", "data/key_points.csv"]
)
def test_ordinary_files(path: str) -> None:
    assert not secret_file(path)


def test_refusal_names_the_file_and_both_fixes() -> None:
    with pytest.raises(SecretFileError) as info:
        refuse_secret_files(["train.py", "conf/.env", "id_rsa"])
    message = str(info.value)
    assert message.startswith("untracked file conf/.env (and 1 more) looks like a secret")
    assert "add it to .gitignore" in message and "--allow-secret-files" in message


def test_masked_env_hides_only_secret_values() -> None:
    env = {"SEED": "1", "HF_TOKEN": "hf_x", "DATABASE_URL": "postgres://a:b@h/d"}
    assert masked_env(env) == {"SEED": "1", "HF_TOKEN": MASK, "DATABASE_URL": MASK}


def test_a_certificate_path_is_no_secret() -> None:
    assert secret_env("SSL_CERT_FILE", "/etc/ssl/certs/ca.pem") is None
