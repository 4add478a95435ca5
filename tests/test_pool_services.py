"""`hydra/launcher=mfcl_pool` end to end on the real services: local slots, the two loopback sshd
hosts (scripts/ssh-test-hosts.sh) and the one-node Slurm cluster (scripts/slurm-test-cluster.sh).

The task (tests/apps/ssh_app) appends a line to side/started.log when it starts and to
side/done.log when it finishes, so runs are counted where they execute, not only in the journal.
Sources come from launcher presets (conf/hydra/launcher/<name>.yaml, as `mfcl-sweeps init` writes
them) named in the short form `[local:2,ssh:a:2,ssh:b:2,slurm:cluster:3]`.
"""
from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest
from services import SLURM_PARTITION, SSH_HOSTS, require_service
from test_ssh_launcher import DOOMED_PORT, lines
from test_ssh_launcher import doomed_host as doomed_host_fixture  # noqa: F401  (registers `doomed_host`)
from test_ssh_launcher import project as project_fixture  # noqa: F401  (registers `project`)

from mfcl_sweeps.state.manifest import SweepManifest

pytestmark = [pytest.mark.ssh, pytest.mark.slurm, pytest.mark.slow]
PORT_A, PORT_B = SSH_HOSTS.ports[:2]
SLURM_POLL = "poll_min_s: 0.3\npoll_max_s: 2\ntimeout_min: 10\n"


def write_presets(tmp: Path, ssh_ports: dict[str, int]) -> Path:
    """One preset per SSH host (its workdir and HOST_TAG) and `cluster` for Slurm."""
    presets = tmp / "presets"
    presets.mkdir(exist_ok=True)
    for name, port in ssh_ports.items():
        workdir = tmp / ("host_a" if name in ("a", "doomed") else "host_b")
        key = "/tmp/mfcl-ssh-doomed/id_ed25519" if port == DOOMED_PORT else str(SSH_HOSTS.key)
        (presets / f"{name}.yaml").write_text(
            "defaults:\n  - mfcl_ssh\n  - _self_\n"
            f"hosts:\n  - {{host: 127.0.0.1, port: {port}, user: root, slots: 2, workdir: '{workdir}', "
            f"env: {{HOST_TAG: {name}}}}}\n"
            f"python: {sys.executable}\nidentity_file: {key}\nknown_hosts_file: {tmp / 'known_hosts'}\n"
            "dead_after_s: 3\nhealth_check_interval_s: 1\n")
    (presets / "cluster.yaml").write_text(
        f"defaults:\n  - mfcl_slurm\n  - _self_\npartition: {SLURM_PARTITION}\n{SLURM_POLL}")
    return presets


def pool_argv(proj: Path, sources: str, *overrides: str) -> list[str]:
    tmp = proj.parent
    return [sys.executable, "app.py", "--multirun", f"hydra.sweep.dir={tmp / 'sweep'}", f"side_dir={tmp / 'side'}",
            "hydra/sweeper=mfcl", "hydra/launcher=mfcl_pool", f"hydra.launcher.sources={sources}",
            f"hydra.launcher.preset_dir={tmp / 'presets'}", "hydra.launcher.progress=log", *overrides]


def counts(path: Path) -> collections.Counter:
    return collections.Counter(int(parts[0]) for parts in lines(path))


def records(sweep: Path) -> dict:
    return {r.index: r for r in SweepManifest(sweep).records().values()}


@pytest.fixture
def services() -> None:
    require_service("ssh")
    require_service("slurm")


def test_thirty_runs_over_local_two_ssh_hosts_and_slurm_each_run_exactly_once(project: Path, services):  # noqa: F811
    tmp = project.parent
    write_presets(tmp, {"a": PORT_A, "b": PORT_B})
    p = subprocess.run(pool_argv(project, "[local:2,ssh:a:2,ssh:b:2,slurm:cluster:3]", "x=range(30)", "sleep_s=1.5"),
                       cwd=project, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert counts(tmp / "side" / "started.log") == {x: 1 for x in range(30)}  # executed once each
    assert counts(tmp / "side" / "done.log") == {x: 1 for x in range(30)}
    recs = records(tmp / "sweep")
    assert len(recs) == 30 and {r.status for r in recs.values()} == {"completed"}
    by_source = collections.Counter(r.extra["source"] for r in recs.values())
    assert set(by_source) == {"local", "a", "b", "cluster"}, by_source
    # the task's own view agrees: SSH runs ran with their host's tag, the others without one
    tags = {int(x): tag for x, tag in lines(tmp / "side" / "done.log")}
    assert all(tags[r.index] == (r.extra["source"] if r.extra["source"] in ("a", "b") else "none")
               for r in recs.values())
    sweep = tmp / "sweep"
    for i in range(30):  # the same layout as with one launcher
        assert (sweep / str(i) / ".hydra" / "overrides.yaml").exists()
        assert (sweep / str(i) / "artifact.txt").read_text().split()[0] == str(i)
    assigned = (sweep / "logs" / "task_assignments.log").read_text()
    assert assigned.count(" attempt=1 ") == 30 and "kind=slurm" in assigned and "kind=ssh" in assigned
    util = (sweep / "logs" / "source_utilization.log").read_text()
    assert all(f"source={n} " in util for n in ("local", "a", "b", "cluster"))
    for name in ("local", "a", "b", "cluster"):
        assert (sweep / "logs" / "sources" / f"{name}.log").exists()
