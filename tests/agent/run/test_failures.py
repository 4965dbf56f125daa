from __future__ import annotations

import pytest

from overnight.agent.run.failures import MAX_CHARS, describe_failure, error_line

TRACEBACK = [
    "epoch 3 loss 0.41",
    "Traceback (most recent call last):",
    '  File "train.py", line 40, in <module>',
    "    loss.backward()",
    "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "wandb: Waiting for W&B process to finish... (failed 1).",
    "wandb: Synced 5 W&B file(s), 0 media file(s)",
    "[overnight] log flushed",
]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (TRACEBACK, "exited with 1: torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
        (["KeyboardInterrupt"], "exited with 1: KeyboardInterrupt"),
        (["ok", "  AssertionError  "], "exited with 1: AssertionError"),
        (["x", "subprocess.CalledProcessError: Command 'x' returned 2."], "exited with 1: subprocess.CalledProcessError: Command 'x' returned 2."),
        (["step 9", "diverged: loss is nan"], "exited with 1 (last output: diverged: loss is nan)"),
        (["usage: train.py [-h]", "train.py: error: unrecognized arguments: --lr2"], "exited with 1 (last output: train.py: error: unrecognized arguments: --lr2)"),
        (["Segmentation fault", "cleanup done"], "exited with 1: Segmentation fault"),
        (["ErrorCount: 3 is just a log line"], "exited with 1 (last output: ErrorCount: 3 is just a log line)"),
        ([], "exited with 1"),
        (["", "   ", "[overnight] only ours"], "exited with 1"),
    ],
)  # fmt: skip
def test_the_line_that_says_why(lines: list[str], expected: str) -> None:
    assert describe_failure("exited with 1", lines) == expected


def test_a_long_line_is_cut() -> None:
    said = error_line(["ValueError: " + "x" * 1000])
    assert said is not None
    text, is_error = said
    assert is_error and len(text) == MAX_CHARS and text.endswith("…")
