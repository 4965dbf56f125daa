from __future__ import annotations

import pytest

from overnight.recorder.params import FLAG_VALUE, parse_params, set_param


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "train.py", "--lr", "0.1", "--bs=32"], {"lr": "0.1", "bs": "32"}),
        (["python", "-u", "train.py", "--amp", "--lr", "-0.5"], {"amp": FLAG_VALUE, "lr": "-0.5"}),
        (["python", "-m", "pkg.train", "-n", "5", "data.csv"], {"n": "5"}),
        (["./run.sh", "--epochs", "3", "--", "--not", "x"], {"epochs": "3"}),
        (["torchrun", "--nproc", "4", "train.py", "--lr", "1"], {"nproc": "4", "lr": "1"}),
        (["python3.11", "train.py", "--lr", "1", "--lr", "2"], {"lr": "2"}),
    ],
)
def test_parse_params(argv: list[str], expected: dict[str, str]) -> None:
    assert parse_params(argv) == expected


def test_set_param_replaces_spaced_and_equals_forms() -> None:
    argv = ("python", "train.py", "--lr", "0.1", "--bs=32")
    assert set_param(argv, "lr", "0.01") == ("python", "train.py", "--lr", "0.01", "--bs=32")
    assert set_param(argv, "bs", "64") == ("python", "train.py", "--lr", "0.1", "--bs=64")


def test_set_param_appends_missing_and_fills_bare_flag() -> None:
    argv = ("python", "train.py", "--amp", "--", "rest")
    assert set_param(argv, "seed", "3") == (
        "python",
        "train.py",
        "--amp",
        "--seed",
        "3",
        "--",
        "rest",
    )
    assert set_param(argv, "amp", "false") == ("python", "train.py", "--amp", "false", "--", "rest")
    assert set_param(("python", "t.py"), "n", "2") == ("python", "t.py", "-n", "2")


def test_set_then_parse_round_trips() -> None:
    argv = ("python", "train.py", "--lr", "0.1")
    assert parse_params(set_param(argv, "wd", "1e-4")) == {"lr": "0.1", "wd": "1e-4"}
