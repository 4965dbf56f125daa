from __future__ import annotations

import inspect

from overnight import errors
from overnight.errors import ExitCode, exit_code_for

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if cls.__module__ == errors.__name__ and cls not in (ExitCode, errors.OvernightWarning)
]


def test_one_warning_category_issued_where_the_cli_warns() -> None:
    assert issubclass(errors.OvernightWarning, UserWarning)
    assert not issubclass(errors.OvernightWarning, errors.OvernightError)
    assert (errors.OvernightWarning.__doc__ or "").startswith("Issued ")


def test_one_root_and_a_raised_when_line_on_each_error() -> None:
    assert CLASSES and all(issubclass(cls, errors.OvernightError) for cls in CLASSES)
    for cls in CLASSES:
        assert (cls.__doc__ or "").startswith("Raised "), cls.__name__


def test_each_sub_root_has_its_own_exit_code() -> None:
    # GitError never reaches the user as such: the recorder and the agent wrap it.
    sub_roots = [
        cls
        for cls in CLASSES
        if issubclass(cls, errors.OvernightError)
        and cls.__bases__ == (errors.OvernightError,)
        and cls is not errors.GitError
    ]
    codes = {cls.__name__: exit_code_for(cls("x")) for cls in sub_roots}
    assert len(codes) >= 6
    assert ExitCode.FAILURE not in codes.values(), codes
    assert len(set(codes.values())) == len(codes), codes
