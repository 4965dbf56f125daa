from __future__ import annotations

from overnight.agent.environments.cachekeys import environment_key, normalize_requirements


def test_order_comments_and_spacing_do_not_change_the_key() -> None:
    a = "numpy==2.0\n# a comment\nrequests  >=2   # why\n\n"
    b = "requests >=2\nnumpy==2.0\n"
    assert normalize_requirements(a) == normalize_requirements(b) == "numpy==2.0\nrequests >=2\n"
    assert environment_key("3.11", normalize_requirements(a)) == environment_key(
        "3.11", normalize_requirements(b)
    )


def test_every_part_counts_and_parts_do_not_run_together() -> None:
    assert environment_key("3.11", "x") != environment_key("3.12", "x")
    assert environment_key("ab", "c") != environment_key("a", "bc")
    assert normalize_requirements("") == ""
