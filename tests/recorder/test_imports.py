from __future__ import annotations

from pathlib import Path

from overnight.recorder.imports import imported_modules


def test_imports_are_read_through_the_repositorys_own_modules(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "train.py").write_text(
        "import os, numpy as np\nfrom models import net\nimport utils\nfrom . import rel\n"
        "def f():\n    import yaml\n"
    )
    (tmp_path / "utils.py").write_text("from requests.adapters import HTTPAdapter\nimport train\n")
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "net.py").write_text("import torch.nn\n")
    (tmp_path / "broken.py").write_text("import (\n")
    found = imported_modules(tmp_path / "train.py", [tmp_path])
    assert found == {"os", "numpy", "models", "utils", "yaml", "requests", "train", "torch"}
    assert imported_modules(tmp_path / "broken.py", [tmp_path]) == set()
