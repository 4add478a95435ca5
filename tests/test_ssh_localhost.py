"""`mfcl_ssh` with a `localhost:N` host: the same staging, supervisor and collection path as a
remote host, run with `sh -c` instead of ssh (no sshd needed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_ssh_launcher import APP, git, lines

from mfcl_sweeps.state.manifest import SweepManifest


def test_localhost_host_uses_its_workdir_and_collects(tmp_path: Path):
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(APP, proj)
    git("init", "-q", cwd=proj)
    git("add", "-A", cwd=proj)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=proj)
    git("clone", "-q", str(proj), str(tmp_path / "wd"), cwd=tmp_path)
    p = subprocess.run([sys.executable, "app.py", "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                        f"side_dir={tmp_path / 'side'}", "x=range(4)", "hydra/launcher=mfcl_ssh",
                        "hydra.launcher.hosts=[localhost:2]", f"hydra.launcher.workdir={tmp_path / 'wd'}",
                        f"hydra.launcher.python={sys.executable}", "hydra.launcher.progress=log"],
                       cwd=proj, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {cwd for _, _, cwd in lines(tmp_path / "side" / "started.log")} == {str(tmp_path / "wd")}
    assert sorted(int(x) for x, _ in lines(tmp_path / "side" / "done.log")) == [0, 1, 2, 3]
    for i in range(4):
        assert (tmp_path / "sweep" / str(i) / "artifact.txt").exists()
    assert {r.host for r in SweepManifest(tmp_path / "sweep").records().values()} == {"localhost"}
