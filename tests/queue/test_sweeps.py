from __future__ import annotations

import pytest

from overnight.errors import UsageError
from overnight.queue.sweeps import Sweep, expand, parse_sweep
from overnight.recorder.params import Param


def test_parse_sweep() -> None:
    assert parse_sweep("lr=0.1,0.01") == Sweep("lr", ("0.1", "0.01"))
    assert parse_sweep("--bs=32") == Sweep("bs", ("32",))


@pytest.mark.parametrize("text", ["lr", "lr=", "=1,2", "lr=1,,2", "lr=1,1", "l r=1"])
def test_bad_sweeps(text: str) -> None:
    with pytest.raises(UsageError, match="--sweep"):
        parse_sweep(text)


def test_cross_product_sets_params_in_argv() -> None:
    argv = ("python", "train.py", "--lr", "0.5", "--epochs=3")
    sweeps = [Sweep("lr", ("0.1", "0.01")), Sweep("bs", ("32", "64"))]
    variants = expand(argv, sweeps, declared=[Param(("--bs",))])
    assert [v for v, _ in variants] == [
        ("python", "train.py", "--lr", "0.1", "--epochs=3", "--bs", "32"),
        ("python", "train.py", "--lr", "0.1", "--epochs=3", "--bs", "64"),
        ("python", "train.py", "--lr", "0.01", "--epochs=3", "--bs", "32"),
        ("python", "train.py", "--lr", "0.01", "--epochs=3", "--bs", "64"),
    ]
    assert variants[3][1] == {"lr": "0.01", "epochs": "3", "bs": "64"}


def test_same_name_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="more than once"):
        expand(("python", "t.py"), [Sweep("lr", ("1",)), Sweep("lr", ("2",))])
    with pytest.raises(UsageError, match="names n-estimators more than once"):
        expand(
            ("python", "t.py", "--n-estimators", "1"),
            [Sweep("n_estimators", ("1",)), Sweep("n-estimators", ("2",))],
        )


def test_a_name_the_command_lacks_is_refused_unless_added() -> None:
    argv = ("python", "train.py", "--n-estimators", "10")
    with pytest.raises(UsageError, match=r"--sweep n_estimator: .*closest: --n-estimators"):
        expand(argv, [Sweep("n_estimator", ("10", "50"))])
    variants = expand(argv, [Sweep("seed", ("1", "2"))], add=True)
    assert [v[-2:] for v, _ in variants] == [("--seed", "1"), ("--seed", "2")]


def test_underscored_hydra_and_flag_sweeps_set_argv_in_place() -> None:
    argv = ("python", "train.py", "--n-estimators", "10", "epochs=3", "--amp")
    sweeps = [
        Sweep("n_estimators", ("50",)),
        Sweep("epochs", ("5",)),
        Sweep("amp", ("true", "false")),
    ]
    assert [v for v, _ in expand(argv, sweeps)] == [
        ("python", "train.py", "--n-estimators", "50", "epochs=5", "--amp"),
        ("python", "train.py", "--n-estimators", "50", "epochs=5"),
    ]
    with pytest.raises(UsageError, match="--sweep amp=0: --amp is a bare flag"):
        expand(argv, [Sweep("amp", ("0", "1"))])


def test_no_sweep_is_the_command_itself() -> None:
    assert expand(("python", "t.py", "--a", "1"), []) == [
        (("python", "t.py", "--a", "1"), {"a": "1"})
    ]
