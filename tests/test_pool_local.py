"""mfcl_pool end to end with local sources only (no service needed): the dry run per source,
refusals before anything starts (a run no source fits, a bad source), and the per-source rows
of `mfcl-sweeps status`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).parent / "apps" / "ssh_app"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    shutil.copytree(APP, tmp_path / "proj")
    return tmp_path / "proj"


def sweep(app: Path, sources: str, *overrides: str) -> subprocess.CompletedProcess:
    tmp = app.parent
    argv = [sys.executable, "app.py", "--multirun", f"hydra.sweep.dir={tmp / 'sweep'}", f"side_dir={tmp / 'side'}",
            "hydra/sweeper=mfcl", "hydra/launcher=mfcl_pool", f"hydra.launcher.sources={sources}",
            "hydra.launcher.progress=log", *overrides]
    return subprocess.run(argv, cwd=app, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_dry_run_prints_each_sources_exact_submissions_and_starts_nothing(app: Path):
    p = sweep(app, "[local:1,{kind:local,name:second,slots:1}]", "x=range(4)", "hydra.sweeper.dry_run=true")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("## source local") == 2 and p.stdout.count("## source second") == 2, p.stdout
    assert p.stdout.count("-m mfcl_sweeps.worker") == 4
    assert not (app.parent / "side").exists()


@pytest.mark.slow
def test_a_run_no_source_can_take_stops_the_sweep_before_anything_starts(app: Path):
    (app.parent / "sweep.yaml").write_text("groups:\n  - group: cpu\n    params: {x: [1, 2]}\n"
                                           "  - group: big\n    gpus_per_node: 4\n    params: {x: [3]}\n")
    p = sweep(app, "[{kind:local,gpus:1},{kind:local,name:box,gpus:2}]",
              f"hydra.sweeper.sweep_file={app.parent / 'sweep.yaml'}")
    assert p.returncode != 0
    line = next(ln for ln in p.stderr.splitlines() if "fits no source" in ln)
    assert "run 00002_big" in line and "needs 4 GPU(s) per node, local declares 1" in line
    assert "box declares 2" in line and "Traceback" not in p.stderr
    assert not (app.parent / "side").exists()  # not even the runs that fit started


@pytest.mark.parametrize("sources, words", [
    ("[cloud:4]", "hydra.launcher.sources[0].kind='cloud': unknown source kind"),
    ("[{kind:local,max_concurent:2}]", "hydra.launcher.sources[0] (local): hydra.launcher.max_concurent=2: not an "
                                       "option of mfcl_local; did you mean max_concurrent?"),
])
def test_a_bad_source_is_one_line_before_anything_is_written(app: Path, sources: str, words: str):
    p = sweep(app, sources, "x=1")
    assert p.returncode != 0 and words in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not (app.parent / "sweep").exists()


@pytest.mark.slow
def test_status_shows_runs_slots_and_health_per_source(app: Path):
    p = sweep(app, "[local:1,{kind:local,name:second,slots:1}]", "x=range(4)")
    assert p.returncode == 0, p.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "status", str(app.parent / "sweep"), "--json"],
                         capture_output=True, text=True, timeout=60)
    rows = {r["source"]: r for r in json.loads(out.stdout)["sources"]}
    assert set(rows) == {"local", "second"}
    assert sum(r["runs"].get("completed", 0) for r in rows.values()) == 4
    assert all(r["slots"] == 1 and r["busy"] == 0 and r["health"] == "enabled" for r in rows.values())
    assert all(r["runs"].get("completed", 0) >= 1 for r in rows.values())  # both sources took runs
