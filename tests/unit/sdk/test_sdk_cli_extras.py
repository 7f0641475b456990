"""The author CLI brings what its commands need, and says in one line what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from summit_sdk.cli import app
from typer.testing import CliRunner

SDK = Path(__file__).resolve().parents[3] / "sdk"


def _run(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_the_cli_extra_brings_pytest() -> None:
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    cli = project["optional-dependencies"]["cli"]
    assert any(req.split(">")[0].split("=")[0].strip() == "pytest" for req in cli)
    assert project["scripts"]["summit-plugin"] == "summit_sdk.console:main"


def test_test_without_pytest_is_one_line_naming_the_install(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["new", "fresh", "--dir", str(tmp_path)]).exit_code == 0
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    # sys.modules[name] = None is how Python spells "this module cannot be imported".
    code = (
        "import sys; sys.modules['pytest'] = None; sys.argv = ['summit-plugin', *sys.argv[1:]]\n"
        "from summit_sdk.console import main; main()"
    )
    done = _run(code, "test", str(folder), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'summit-plugin-sdk[cli]'" in lines[0]


def test_the_command_without_the_cli_extra_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['typer'] = None; sys.argv = ['summit-plugin', '--help']\n"
        "from summit_sdk.console import main; main()"
    )
    done = _run(code, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: summit-plugin needs typer from the 'cli' extra: "
        "pip install 'summit-plugin-sdk[cli]'"
    )
