from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from overnight.errors import UsageError
from overnight.optimize.space import (
    SearchParam,
    command_flags,
    command_spellings,
    grid,
    parse_param,
    parse_space,
    set_values,
)
from overnight.recorder.params import Param


def test_each_kind_parses_to_its_distribution() -> None:
    lr = parse_param("lr=loguniform:1e-5:1e-1")
    assert lr == SearchParam("lr", "loguniform", 1e-5, 0.1)
    assert lr.distribution() == FloatDistribution(1e-5, 0.1, log=True)
    assert parse_param("x=float:-1:1").distribution() == FloatDistribution(-1, 1)
    assert parse_param("layers=int:2:8").distribution() == IntDistribution(2, 8)
    bs = parse_param("--bs=choice:32,64,128")
    assert bs.distribution() == CategoricalDistribution(("32", "64", "128"))
    for param in (lr, bs, parse_param("layers=int:2:8")):
        assert parse_param(param.text()) == param  # what the settings keep reads back


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("lr", "use NAME=float:LOW:HIGH"),
        ("lr=gauss:0:1", "use NAME=float:LOW:HIGH"),
        ("lr=float:1:0", "LOW below HIGH"),
        ("lr=float:a:1", "must be numbers"),
        ("lr=loguniform:0:1", "LOW above 0"),
        ("n=int:1.5:3", "whole numbers"),
        ("bs=choice:32,,64", "distinct and not empty"),
        ("bs=choice:32,32", "distinct and not empty"),
        ("lr=float:nan:1", "LOW below HIGH"),
    ],
)
def test_a_bad_param_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_param(text)


def test_a_name_is_given_once() -> None:
    with pytest.raises(UsageError, match="more than once"):
        parse_space(["n_layers=int:1:2", "n-layers=int:1:3"])


def test_spellings_follow_the_command_and_its_script() -> None:
    argv = ("python", "train.py", "--lr", "0.1", "epochs=3")
    space = parse_space(["lr=float:0:1", "epochs=int:1:9", "n_layers=int:1:4"])
    declared = (Param(("--n-layers",)),)
    spellings = command_spellings(argv, space, declared)
    assert spellings == {"lr": "--lr", "epochs": "epochs", "n_layers": "--n-layers"}
    values = {"lr": 0.25, "epochs": 4, "n_layers": 2}
    assert set_values(argv, values, spellings) == (
        "python", "train.py", "--lr", "0.25", "epochs=4", "--n-layers", "2",
    )  # fmt: skip
    with pytest.raises(UsageError, match="--param depth: the command has no option depth"):
        command_spellings(argv, parse_space(["depth=int:1:3"]))
    assert command_spellings(argv, parse_space(["depth=int:1:3"]), add=True) == {"depth": "depth"}


@pytest.mark.parametrize(
    ("argv", "declared", "on"),
    [
        (("python", "train.py", "--amp", "--lr", "0.1"), (),  # given bare
         ("python", "train.py", "--amp", "--lr", "0.5")),
        (("python", "train.py", "--lr", "0.1"), (Param(("--amp",), flag=True),),  # store_true
         ("python", "train.py", "--lr", "0.5", "--amp")),
    ],
)  # fmt: skip
def test_a_bare_flag_is_given_or_left_out(
    argv: tuple[str, ...], declared: tuple[Param, ...], on: tuple[str, ...]
) -> None:
    space = parse_space(["amp=choice:true,false", "lr=float:0:1"])
    spellings = command_spellings(argv, space, declared)
    flags = command_flags(argv, space, declared)
    assert flags == ("amp",)
    assert set_values(argv, {"amp": "true", "lr": 0.5}, spellings, flags) == on
    off = set_values(argv, {"amp": "false", "lr": 0.5}, spellings, flags)
    assert off == ("python", "train.py", "--lr", "0.5")


def test_a_bare_flag_takes_only_true_and_false() -> None:
    argv = ("python", "train.py", "--amp")
    with pytest.raises(UsageError, match="--amp is a bare flag"):
        command_spellings(argv, parse_space(["amp=choice:true,maybe"]))


def test_one_letter_options_keep_their_two_dashes() -> None:
    spellings = {"x": "--x"}
    assert set_values(("python", "f.py"), {"x": 1.5}, spellings) == ("python", "f.py", "--x", "1.5")


def test_a_grid_takes_choices_and_ints_only() -> None:
    assert grid(parse_space(["bs=choice:1,2", "n=int:1:3"])) == {"bs": ["1", "2"], "n": [1, 2, 3]}
    with pytest.raises(UsageError, match="lr is a float range, which has no grid"):
        grid(parse_space(["lr=float:0:1"]))
