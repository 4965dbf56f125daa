"""Metrics files read as they grow: CSV and JSON lines, partial lines held, links refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from overnight.metrics.files import MAX_ROW, MetricFiles
from overnight.metrics.tracker import MetricTracker


def _files(tree: Path, *paths: str) -> tuple[MetricFiles, MetricTracker, list[str]]:
    tracker = MetricTracker()
    warnings: list[str] = []
    return MetricFiles(tracker, tree, paths, warn=warnings.append), tracker, warnings


def _lasts(tracker: MetricTracker) -> dict[str, tuple[float, float | None, int]]:
    return {k: (s.last, s.last_step, s.count) for k, s in tracker.summaries().items()}


def test_a_csv_file_is_read_as_it_grows_its_last_line_held(tmp_path: Path) -> None:
    files, tracker, warnings = _files(tmp_path, "out/m.csv")
    files.poll()  # not written yet: nothing, and no warning
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "m.csv"
    path.write_text("epoch, loss ,acc,note\n0,2.0,0.1,warm\n1,1.5,")
    files.poll()
    assert _lasts(tracker) == {"loss": (2.0, 0.0, 1), "acc": (0.1, 0.0, 1)}
    with path.open("a") as out:
        out.write("0.2,x\n2,1.0,nan,\n3,0.5")
    files.poll()
    assert _lasts(tracker) == {"loss": (1.0, 2.0, 3), "acc": (0.2, 1.0, 2)}
    files.poll(final=True)  # the run ended: its last line is taken as it stands
    assert _lasts(tracker)["loss"] == (0.5, 3.0, 4)
    assert warnings == []


def test_json_lines_and_a_file_written_anew(tmp_path: Path) -> None:
    files, tracker, _ = _files(tmp_path, "m.jsonl")
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "loss": 3}\nnot json\n[1]\n{"step": 2, "loss": 2, "s": "x"}\n')
    files.poll()
    assert _lasts(tracker) == {"loss": (2.0, 2.0, 2)}
    path.write_text('{"loss": 9}\n')  # shorter: read again from its start
    files.poll()
    assert _lasts(tracker) == {"loss": (9.0, None, 3)}
    replacement = tmp_path / "new"
    replacement.write_text('{"loss": 1}\n{"loss": 4}\n')  # as long or longer, another file
    os.replace(replacement, path)
    files.poll()
    assert _lasts(tracker) == {"loss": (4.0, None, 5)}


def test_a_row_past_the_bound_is_passed_over(tmp_path: Path) -> None:
    files, tracker, _ = _files(tmp_path, "m.csv")
    path = tmp_path / "m.csv"
    path.write_text("loss\n" + "1" * (MAX_ROW + 10))
    files.poll()
    with path.open("a") as out:
        out.write("\n2\n")
    files.poll()
    assert _lasts(tracker) == {"loss": (2.0, None, 1)}


def test_a_poll_reads_a_bounded_amount(tmp_path: Path) -> None:
    tracker = MetricTracker()
    files = MetricFiles(tracker, tmp_path, ["m.csv"], read_bytes=64)
    (tmp_path / "m.csv").write_text("loss\n" + "".join(f"{i}\n" for i in range(100)))
    files.poll()
    assert 0 < tracker.summaries()["loss"].count < 100
    for _ in range(10):
        files.poll()
    assert tracker.summaries()["loss"].count == 100


def test_links_are_not_followed(tmp_path: Path) -> None:
    tree, canary = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    canary.mkdir()
    secret = canary / "metrics.csv"
    secret.write_text("loss\n1\n")
    (tree / "m.csv").symlink_to(secret)
    (tree / "linked").symlink_to(canary, target_is_directory=True)
    files, tracker, warnings = _files(tree, "m.csv", "linked/metrics.csv")
    files.poll()
    files.poll()
    assert tracker.summaries() == {}
    assert len(warnings) == 2  # once each
    assert all("symbolic link" in w and "not followed" in w for w in warnings)


@pytest.mark.parametrize("path", ["../m.csv", "a//m.csv", "./m.csv"])
def test_paths_that_are_not_plain_are_refused(tmp_path: Path, path: str) -> None:
    (tmp_path / "m.csv").write_text("loss\n1\n")
    files, tracker, warnings = _files(tmp_path / "tree", path)
    (tmp_path / "tree").mkdir()
    files.poll()
    assert tracker.summaries() == {}
    assert warnings and "not a plain path" in warnings[0]
