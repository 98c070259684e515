"""A wheel built from the repository holds its config tree: installed into a fresh environment, `python -m ablate`
and the `ablate` command compose the config from any folder (issue 15, section 3)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# uv on PATH, else the one the Makefile installs for python3 (`python3 -m uv`); the test environment need not have it.
UV = [shutil.which("uv")] if shutil.which("uv") else ["python3", "-m", "uv"]

# Building the wheel and installing torch & co. into a fresh environment (from uv's cache) takes minutes.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(subprocess.run([*UV, "--version"], capture_output=True).returncode != 0, reason="needs uv"),
]


def test_a_wheel_runs_from_another_folder(tmp_path):
    env = {**os.environ, "UV_NO_PROGRESS": "1", "WANDB_MODE": "disabled"}
    env.pop("VIRTUAL_ENV", None)
    build = subprocess.run(
        [*UV, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ablate-*.whl")
    venv = tmp_path / "venv"
    assert subprocess.run([*UV, "venv", "-q", "-p", sys.executable, str(venv)], env=env).returncode == 0
    python = venv / "bin" / "python"
    # The locked versions, so that the check needs nothing the cache lacks.
    requirements = subprocess.run(
        [*UV, "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-dev", "-o", str(tmp_path / "req.txt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert requirements.returncode == 0, requirements.stderr[-3000:]
    install = subprocess.run(
        [*UV, "pip", "install", "-q", "--python", str(python), "-r", str(tmp_path / "req.txt"), str(wheel)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in ([str(python), "-m", "ablate"], [str(venv / "bin" / "ablate")]):
        result = subprocess.run(
            [*command, "--cfg", "job", "model=allconv5", "+sweep=depth"],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "name: allconv5" in result.stdout and "limit:" in result.stdout
    # Not the repository's tree: the installed package's own.
    assert not (elsewhere / "conf").exists() and shutil.which("ablate", path=str(venv / "bin"))
