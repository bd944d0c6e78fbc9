"""`pip install .` installs the library alone, with the runtime dependencies requirements.txt lists."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path):
    lines = (line.split("#")[0].strip() for line in open(path))
    return [line for line in lines if line and not line.startswith("-r")]


def test_pyproject_declares_the_requirements_files():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == requirement_lines(ROOT / "requirements.txt")
    assert project["optional-dependencies"]["export"] == requirement_lines(ROOT / "requirements-export.txt")


def test_wheel_holds_the_package_alone_and_imports_from_anywhere_once_installed(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside pyproject.toml.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "retinanet", source / "retinanet", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation, no dependencies: nothing is downloaded (setuptools is already installed).
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")],
                   check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("retinanet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"retinanet", wheel.name.split("-py3")[0] + ".dist-info"}
    sources = {str(p.relative_to(ROOT)).replace(os.sep, "/") for p in (ROOT / "retinanet").rglob("*.py")}
    assert sources <= set(names)

    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True)
    # From another folder, with only the installed copy on the path (torch, numpy, ... from this environment).
    result = subprocess.run(
        [sys.executable, "-c", "import retinanet.model, retinanet.evaluation; print(retinanet.__file__)"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip()).parent == tmp_path / "site" / "retinanet"
