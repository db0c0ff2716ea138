"""The monorepo's layout and metadata promises (README, ARCHITECTURE.md section 2)."""

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = [
    "attention",
    "av-rope",
    "flow-matching",
    "audio-vae",
    "mmdit-blocks",
    "inpaint-conditioning",
    "refiner-vsa",
    "skyreels-v4",
]


def dist_name(folder: str) -> str:
    return "skyreels-v4" if folder == "skyreels-v4" else f"skyreels-{folder}"


def test_packages_folder_holds_exactly_the_planned_packages():
    found = sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir())
    assert found == sorted(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_package_layout_and_metadata(folder):
    root = ROOT / "packages" / folder
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    import_name = dist_name(folder).replace("-", "_")
    assert meta["name"] == dist_name(folder)
    assert (root / "src" / import_name / "__init__.py").is_file()
    assert (root / "README.md").is_file()
    assert (root / "tests").is_dir()
    # Metadata stays permissive: the CPU pin lives in requirements/dev.txt only.
    for dep in meta.get("dependencies", []):
        if dep.startswith("torch"):
            assert "==" not in dep, f"{folder}: torch must not be pinned in package metadata ({dep})"
    module = importlib.import_module(import_name)
    assert isinstance(module.__all__, list)
    for name in module.__all__:
        assert hasattr(module, name), f"{import_name}.__all__ lists {name!r}, which is missing"


def test_dev_requirements_pin_cpu_torch_and_install_every_package():
    text = (ROOT / "requirements" / "dev.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", text, re.M)
    for folder in FOLDERS:
        assert re.search(rf"^-e packages/{re.escape(folder)}(\[.*\])?$", text, re.M), folder


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    for command in ("bash scripts/setup.sh", "bash scripts/test.sh"):
        assert command in ci
        assert command in readme
