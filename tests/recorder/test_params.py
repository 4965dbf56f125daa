from __future__ import annotations

import pytest

from overnight.errors import UsageError
from overnight.recorder.params import FLAG_VALUE, Param, parse_params, set_param


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


def test_set_param_refuses_a_name_the_command_lacks_with_the_closest() -> None:
    argv = ("python", "train.py", "--n-estimators", "10", "--lr", "0.1")
    with pytest.raises(UsageError, match=r"no option n_estimator .closest: --n-estimators.*--add"):
        set_param(argv, "n_estimator", "50")
    with pytest.raises(UsageError, match=r"--sweep seed: .*\(it has --n-estimators, --lr\)"):
        set_param(argv, "seed", "3", what="--sweep")
    with pytest.raises(UsageError, match="it has none"):
        set_param(("python", "t.py"), "seed", "3")


def test_dashes_and_underscores_are_alike_and_set_in_place() -> None:
    argv = ("python", "train.py", "--n-estimators", "10", "--max_depth=3")
    assert set_param(argv, "n_estimators", "50") == (
        "python", "train.py", "--n-estimators", "50", "--max_depth=3",
    )  # fmt: skip
    assert set_param(argv, "max-depth", "5")[-1] == "--max_depth=5"


def test_add_appends_new_params_before_double_dash() -> None:
    argv = ("python", "train.py", "--amp", "--", "rest")
    assert set_param(argv, "seed", "3", add=True) == (
        "python", "train.py", "--amp", "--seed", "3", "--", "rest",
    )  # fmt: skip
    assert set_param(("python", "t.py"), "n", "2", add=True) == ("python", "t.py", "-n", "2")
    hydra = ("python", "train.py", "epochs=3")
    assert set_param(hydra, "lr", "0.1", add=True) == ("python", "train.py", "epochs=3", "lr=0.1")


def test_hydra_style_words_are_params_replaced_in_place() -> None:
    argv = ("python", "train.py", "epochs=3", "-m", "+model.depth=4", "--out", "x")
    assert parse_params(argv) == {"epochs": "3", "m": "true", "model.depth": "4", "out": "x"}
    assert set_param(argv, "epochs", "5") == (
        "python", "train.py", "epochs=5", "-m", "+model.depth=4", "--out", "x",
    )  # fmt: skip
    assert set_param(argv, "model.depth", "8")[4] == "+model.depth=8"
    valued = ("python", "train.py", "--opts", "a=b")  # declared with a value: a=b is its value
    assert set_param(valued, "opts", "c=d", declared=[Param(("--opts",))])[-1] == "c=d"
    with pytest.raises(UsageError, match="no option a "):
        set_param(valued, "a", "c", declared=[Param(("--opts",))])


def test_bare_flags_take_true_or_false() -> None:
    argv = ("python", "train.py", "--amp", "--lr", "0.1", "--", "--amp")
    assert set_param(argv, "amp", "false") == ("python", "train.py", "--lr", "0.1", "--", "--amp")
    assert set_param(argv, "amp", "TRUE") == argv
    with pytest.raises(UsageError, match=r"--set amp=0: --amp is a bare flag .*amp=false"):
        set_param(argv, "amp", "0")
    declared = [Param(("--amp",), flag=True), Param(("--lr",))]
    plain = ("python", "train.py", "data/")
    assert set_param(plain, "amp", "true", declared=declared) == (*plain, "--amp")
    assert set_param(plain, "amp", "false", declared=declared) == plain
    given = ("python", "train.py", "--amp", "data/")  # a declared flag: data/ is no value
    assert set_param(given, "amp", "false", declared=declared) == plain


def test_declared_aliases_set_the_spelling_argv_uses() -> None:
    declared = [Param(("-n", "--n-estimators")), Param(("--seed",))]
    argv = ("python", "train.py", "-n", "10")
    assert set_param(argv, "n_estimators", "50", declared=declared) == (*argv[:3], "50")
    assert set_param(argv, "seed", "1", declared=declared) == (*argv, "--seed", "1")


def test_set_then_parse_round_trips() -> None:
    argv = ("python", "train.py", "--lr", "0.1")
    assert parse_params(set_param(argv, "wd", "1e-4", add=True)) == {"lr": "0.1", "wd": "1e-4"}
