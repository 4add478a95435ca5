"""Run a test app as a real `--multirun` subprocess and read what it left behind."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

APPS = Path(__file__).parent / "apps"


def run_app(app: str, tmp_path: Path, *overrides: str, timeout: float = 180, env: Optional[dict] = None,
            sweep_dir: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`python tests/apps/<app>/app.py --multirun <overrides>` with its sweep dir under tmp_path
    (unless a `hydra.sweeper.name` picks it: an explicit hydra.sweep.dir would win over the name)."""
    import os

    sweep_dir = sweep_dir or tmp_path / "sweep"
    named = any(o.startswith("hydra.sweeper.name=") for o in overrides)
    cmd = [sys.executable, str(APPS / app / "app.py"), "--multirun",
           *([] if named else [f"hydra.sweep.dir={sweep_dir}"]), f"side_dir={tmp_path / 'side'}", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def side_records(tmp_path: Path) -> dict[str, dict]:
    side = tmp_path / "side"
    return {p.stem: json.loads(p.read_text()) for p in side.glob("*.json")}


def side_lines(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / "side" / name
    return path.read_text().split() if path.exists() else []


def manifest_runs(sweep_dir: Path) -> dict[str, dict]:
    data = json.loads((sweep_dir / "sweep_manifest.json").read_text())
    return {r["run_id"]: r for r in data["runs"]}


def mode_of(run: dict) -> str:
    """The `mode=` value of a manifest run (the behave app's misbehaviour switch)."""
    return next(o.split("=", 1)[1] for o in run["overrides"] if o.startswith("mode="))


def mfcl_sweeps(*args: str) -> subprocess.CompletedProcess:
    """`mfcl-sweeps ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", *args], capture_output=True, text=True, timeout=60)


def status_json(sweep: Path) -> dict:
    proc = mfcl_sweeps("status", str(sweep), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for(predicate, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def alive(pid: int) -> bool:
    """Is process `pid` running (a zombie is not)? Read from /proc, apart from the product's own check."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def loaded_after(setup: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `setup` (import costs
    are paid by every job or every Hydra start-up, so tests keep heavy modules out)."""
    code = f"import sys; {setup}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]
