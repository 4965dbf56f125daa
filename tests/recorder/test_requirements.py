from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from overnight.errors import RequirementsError
from overnight.recorder.interpreter import find_python, python_version
from overnight.recorder.requirements import _freeze_line, find_requirements, freeze
from tests.fixtures.gitrepo import write_file

UV_PROJECT = """\
[project]
name = "demo"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["six==1.16.0"]
"""

UV_LOCK = """\
version = 1
requires-python = ">=3.10"

[[package]]
name = "demo"
version = "0.1.0"
source = { virtual = "." }
dependencies = [{ name = "six" }]

[package.metadata]
requires-dist = [{ name = "six", specifier = "==1.16.0" }]

[[package]]
name = "six"
version = "1.16.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.example/six-1.16.0.tar.gz", hash = "sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926", size = 34041 }
"""


def test_explicit_file_wins_and_records_its_path(tmp_path: Path) -> None:
    write_file(tmp_path, "requirements.txt", "numpy\n")
    write_file(tmp_path, "env/gpu.txt", "torch==2.3.0\n")
    reqs = find_requirements(tmp_path, tmp_path, Path("env/gpu.txt")).requirements
    assert (reqs.source, reqs.text, reqs.path) == ("file", "torch==2.3.0\n", "env/gpu.txt")


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RequirementsError, match=r"--requirements nope\.txt: no such file"):
        find_requirements(tmp_path, tmp_path, Path("nope.txt"))


def test_requirements_txt_includes_are_inlined(tmp_path: Path) -> None:
    write_file(
        tmp_path, "requirements.txt", "-r base.txt\nnumpy==2.0\n--requirement=dev/extra.txt\n"
    )
    write_file(tmp_path, "base.txt", "six==1.16.0\n")
    write_file(tmp_path, "dev/extra.txt", "pytest==8.0\n")
    reqs = find_requirements(tmp_path, tmp_path).requirements
    assert reqs.source == "requirements.txt"
    assert reqs.text == "six==1.16.0\nnumpy==2.0\npytest==8.0\n"


def test_include_cycles_and_missing_includes_are_errors(tmp_path: Path) -> None:
    write_file(tmp_path, "requirements.txt", "-r other.txt\n")
    write_file(tmp_path, "other.txt", "-r requirements.txt\n")
    with pytest.raises(RequirementsError, match="includes itself"):
        find_requirements(tmp_path, tmp_path)
    write_file(tmp_path, "other.txt", "-r gone.txt\n")
    with pytest.raises(RequirementsError, match=r"included file gone\.txt does not exist"):
        find_requirements(tmp_path, tmp_path)


def test_uv_lock_is_exported_to_pinned_lines_without_the_project(tmp_path: Path) -> None:
    write_file(tmp_path, "pyproject.toml", UV_PROJECT)
    write_file(tmp_path, "uv.lock", UV_LOCK)
    write_file(tmp_path, "requirements.txt", "something-else\n")
    reqs = find_requirements(tmp_path, tmp_path).requirements
    assert (reqs.source, reqs.text, reqs.path) == ("uv.lock", "six==1.16.0\n", "uv.lock")


def test_broken_uv_lock_names_uv_error(tmp_path: Path) -> None:
    write_file(tmp_path, "pyproject.toml", UV_PROJECT)
    write_file(tmp_path, "uv.lock", "this is = not [ toml\n")
    with pytest.raises(RequirementsError, match=r"uv export failed for .*uv\.lock: .*uv lock"):
        find_requirements(tmp_path, tmp_path)


def test_pyproject_dependencies_become_lines(tmp_path: Path) -> None:
    write_file(
        tmp_path,
        "pyproject.toml",
        '[project]\nname = "x"\ndependencies = ["numpy>=1.26", "torch==2.3.0; sys_platform == \'linux\'"]\n',
    )
    reqs = find_requirements(tmp_path, tmp_path).requirements
    assert reqs.source == "pyproject.toml"
    assert reqs.text == "numpy>=1.26\ntorch==2.3.0; sys_platform == 'linux'\n"


def test_nearest_declaration_from_workdir_up_to_root(tmp_path: Path) -> None:
    write_file(tmp_path, "requirements.txt", "root-dep==1\n")
    sub = tmp_path / "projects" / "a"
    sub.mkdir(parents=True)
    assert find_requirements(sub, tmp_path).requirements.path == "requirements.txt"
    write_file(
        tmp_path, "projects/a/pyproject.toml", '[project]\nname = "a"\ndependencies = ["a-dep"]\n'
    )
    reqs = find_requirements(sub, tmp_path).requirements
    assert (reqs.source, reqs.path, reqs.text) == (
        "pyproject.toml",
        "projects/a/pyproject.toml",
        "a-dep\n",
    )


def test_pyproject_without_project_dependencies_falls_back_to_freeze(tmp_path: Path) -> None:
    write_file(tmp_path, "pyproject.toml", "[tool.ruff]\nline-length = 100\n")
    reqs = find_requirements(tmp_path, tmp_path).requirements
    assert reqs.source == "freeze"


def test_freeze_has_exact_versions_of_this_environment() -> None:
    reqs = freeze(sys.executable).requirements
    lines = reqs.text.splitlines()
    assert reqs.source == "freeze"
    assert f"click=={importlib.metadata.version('click')}" in lines
    assert not any(line.lower().startswith(("overnight", "pip==")) for line in lines)


def _fake_dist(site: Path, name: str, version: str, direct_url: dict[str, object] | None) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


def test_freeze_asks_the_commands_interpreter(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    _fake_dist(site, "alpha-pkg", "1.2.3", None)
    _fake_dist(site, "mine", "0.1", {"url": "file:///src/mine", "dir_info": {"editable": True}})
    _fake_dist(
        site,
        "fromgit",
        "0.2",
        {
            "url": "https://user:tok@git.example/fromgit.git",
            "vcs_info": {"vcs": "git", "commit_id": "a" * 40},
        },
    )
    python = find_python([str(venv / "bin" / "python"), "train.py"], tmp_path, {"PATH": ""})
    assert python == str(venv / "bin" / "python")
    assert python_version(python) == "{}.{}.{}".format(*sys.version_info[:3])
    reqs = find_requirements(tmp_path, tmp_path, python=python).requirements
    assert reqs.text == (
        f"alpha-pkg==1.2.3\nfromgit @ git+https://git.example/fromgit.git@{'a' * 40}\n"
    )


def test_python_on_path_and_console_script_shebangs_are_followed(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "torchrun"
    script.write_text(f"#!{sys.executable}\nprint('hi')\n")
    script.chmod(0o755)
    env = {"PATH": str(bindir)}
    assert find_python(["torchrun", "train.py"], tmp_path, env) == sys.executable
    (bindir / "python3").symlink_to(sys.executable)
    assert find_python(["python3", "x.py"], tmp_path, env) == str(bindir / "python3")
    assert find_python(["bash", "run.sh"], tmp_path, env) == sys.executable


@pytest.mark.parametrize(
    ("direct", "line"),
    [
        (None, "pkg==1.0"),
        (
            {"url": "https://files.example/pkg-1.0.whl", "archive_info": {}},
            "pkg @ https://files.example/pkg-1.0.whl",
        ),
        ({"url": "file:///wheels/pkg-1.0.whl", "archive_info": {}}, None),
        ({"url": "file:///src/pkg", "dir_info": {"editable": True}}, None),
    ],
)
def test_freeze_lines(direct: dict[str, object] | None, line: str | None) -> None:
    assert _freeze_line("pkg", "1.0", json.dumps(direct) if direct else None) == line


REQUIREMENTS_WITH_CREDENTIALS = """\
--index-url https://ada:hunter2@pypi.lab.example/simple
--extra-index-url=https://ghp_tokentoken@pkgs.example/simple
-i https://u:p@mirror.example/simple
-f https://u:p@wheels.example/links
--find-links https://wheels.example/links?token=t0k
pkg @ git+https://TOKEN123@github.com/org/pkg.git@v1.0
other @ git+https://ada:glpat-abc@gitlab.example/g/other.git#egg=other
numpy==1.26.4
"""


def test_credentials_in_requirements_urls_are_stripped(tmp_path: Path) -> None:
    write_file(tmp_path, "requirements.txt", REQUIREMENTS_WITH_CREDENTIALS)
    write_file(
        tmp_path, "pyproject.toml", '[project]\ndependencies = ["x @ https://u:pw@h/x.whl"]\n'
    )
    found = find_requirements(tmp_path, tmp_path).requirements
    explicit = find_requirements(tmp_path, tmp_path, Path("pyproject.toml")).requirements
    assert found.text.splitlines() == [
        "--index-url https://pypi.lab.example/simple",
        "--extra-index-url=https://pkgs.example/simple",
        "-i https://mirror.example/simple",
        "-f https://wheels.example/links",
        "--find-links https://wheels.example/links",
        "pkg @ git+https://github.com/org/pkg.git@v1.0",
        "other @ git+https://gitlab.example/g/other.git#egg=other",
        "numpy==1.26.4",
    ]
    assert explicit.text == "x @ https://h/x.whl\n"
    for secret in ("hunter2", "ghp_", "u:p", "t0k", "TOKEN123", "glpat", "pw@"):
        assert secret not in found.text + explicit.text


def _dist(
    site: Path, name: str, requires: tuple[str, ...] = (), top_level: str | None = None
) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    meta += "".join(f"Requires-Dist: {req}\n" for req in requires)
    (info / "METADATA").write_text(meta)
    if top_level is not None:
        (info / "top_level.txt").write_text(top_level + "\n")


def test_freeze_leaves_out_what_only_overnight_needs_and_names_local_installs(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    _dist(site, "overnight", ("redisish>=5", "richish", "testonly; extra == 'test'"))
    _dist(site, "redisish", ("asyncish",))
    _dist(site, "richish", top_level="rich_mod")
    _dist(site, "asyncish")
    _dist(site, "testonly")
    _dist(site, "pandasish", ("asyncish",))
    _fake_dist(site, "mylib", "0.3", {"url": "file:///home/ada/mylib", "dir_info": {}})
    script = write_file(tmp_path, "exp/train.py", "import rich_mod.console\nimport helpers\n")
    write_file(tmp_path, "exp/helpers.py", "from os import path\n")
    python = str(venv / "bin" / "python")
    found = freeze(python, script=script, searched="exp")
    # redisish is overnight's alone; asyncish is pandasish's too; the script imports richish
    assert found.requirements.text == (
        "asyncish==1.0\npandasish==1.0\nrichish==1.0\ntestonly==1.0\n"
    )
    freeze_note, local_note = found.notes
    assert freeze_note.startswith("no requirements file from exp/ up to the repository root")
    assert f"recorded a freeze of {python} (4 packages, 1 of overnight's own" in freeze_note
    assert local_note.startswith("the freeze leaves out mylib: installed from local paths")


def test_without_overnight_installed_the_freeze_keeps_everything(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    _dist(site, "redisish", ("asyncish",))
    _dist(site, "asyncish")
    found = freeze(str(venv / "bin" / "python"))
    assert found.requirements.text == "asyncish==1.0\nredisish==1.0\n"
    [note] = found.notes
    assert note.startswith("no requirements file from the repository root")
    assert "of overnight's own" not in note


def test_project_files_of_other_tools_are_found_and_named(tmp_path: Path) -> None:
    write_file(tmp_path, "environment.yml", "dependencies:\n  - numpy\n  - pip:\n    - six\n")
    found = find_requirements(tmp_path, tmp_path)
    assert (found.requirements.source, found.requirements.path) == (
        "environment.yml",
        "environment.yml",
    )
    assert "conda packages numpy will not be installed" in found.notes[0]
    write_file(tmp_path, "Pipfile.lock", json.dumps({"default": {"six": {"version": "==1.16.0"}}}))
    assert find_requirements(tmp_path, tmp_path).requirements.source == "Pipfile.lock"
    write_file(tmp_path, "poetry.lock", '[[package]]\nname = "six"\nversion = "1.16.0"\n')
    found = find_requirements(tmp_path, tmp_path)
    assert (found.requirements.source, found.requirements.text) == ("poetry.lock", "six==1.16.0\n")
    explicit = find_requirements(tmp_path, tmp_path, Path("environment.yml"))
    assert (explicit.requirements.source, explicit.requirements.text) == (
        "environment.yml",
        "six\n",
    )


def test_the_search_starts_at_the_scripts_folder(tmp_path: Path) -> None:
    write_file(tmp_path, "requirements.txt", "jupyter\n")
    write_file(tmp_path, "sklearn/requirements.txt", "scikit-learn==1.5.0\n")
    found = find_requirements(tmp_path, tmp_path, start=tmp_path / "sklearn")
    assert (found.requirements.path, found.requirements.text) == (
        "sklearn/requirements.txt",
        "scikit-learn==1.5.0\n",
    )
    assert found.notes == ()
