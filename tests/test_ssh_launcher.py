"""`hydra/launcher=mfcl_ssh` end to end over real sshd on 127.0.0.1 (scripts/ssh-test-hosts.sh).

Each test builds a small git project (tests/apps/ssh_app) and clones it into one workdir per
host, so a job that ran with a local path instead of its host's would show up.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import REPO, SSH_HOSTS, SSH_SCRIPT, require_service

from mfcl_sweeps.spec.overrides import quote_override_value
from mfcl_sweeps.state.manifest import SweepManifest

pytestmark = pytest.mark.ssh

APP = Path(__file__).parent / "apps" / "ssh_app"
INJECTION = "; $(touch /tmp/mfcl-ssh-pwned) ' \" \\ `touch /tmp/mfcl-ssh-pwned`\nline2 && echo x > /tmp/mfcl-ssh-pwned"
PORT_A, PORT_B = SSH_HOSTS.ports[:2]
DOOMED_PORT = 2203


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    require_service("ssh")
    proj = tmp_path / "proj"
    shutil.copytree(APP, proj)
    (proj / ".gitignore").write_text("*.tmp\n")
    git("init", "-q", cwd=proj)
    git("add", "-A", cwd=proj)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=proj)
    for name in ("host_a", "host_b"):
        git("clone", "-q", str(proj), str(tmp_path / name), cwd=tmp_path)
    SSH_HOSTS.write_known_hosts(tmp_path / "known_hosts")
    return proj


def host(port: int, workdir: Path, tag: str, slots: int = 2, extra: str = "") -> str:
    return (f"{{host:127.0.0.1,port:{port},user:root,slots:{slots},workdir:{quote_override_value(str(workdir))},"
            f"env:{{HOST_TAG:{tag}}}{extra}}}")


def sweep_argv(proj: Path, hosts: list[str], *overrides: str) -> list[str]:
    tmp = proj.parent
    return [sys.executable, "app.py", "--multirun", f"hydra.sweep.dir={tmp / 'sweep'}", f"side_dir={tmp / 'side'}",
            "hydra/launcher=mfcl_ssh", f"hydra.launcher.hosts=[{','.join(hosts)}]",
            f"hydra.launcher.python={sys.executable}", f"hydra.launcher.identity_file={SSH_HOSTS.key}",
            f"hydra.launcher.known_hosts_file={tmp / 'known_hosts'}", "hydra.launcher.progress=log", *overrides]


def run_sweep(proj: Path, hosts: list[str], *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_argv(proj, hosts, *overrides), cwd=proj, capture_output=True, text=True,
                          timeout=timeout)


def lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def two_hosts(tmp: Path) -> list[str]:
    return [host(PORT_A, tmp / "host_a", "a"), host(PORT_B, tmp / "host_b", "b")]


RUNS = 8


def test_runs_spread_over_two_hosts_results_collected(project: Path):
    tmp = project.parent
    # RUNS on 2 hosts x 2 slots: slots are freed and reused, results come back from both hosts
    p = run_sweep(project, two_hosts(tmp), f"x=range({RUNS})", "sleep_s=0.2")
    assert p.returncode == 0, p.stderr[-3000:]
    done = lines(tmp / "side" / "done.log")
    assert sorted(int(x) for x, _ in done) == list(range(RUNS))
    assert {tag for _, tag in done} == {"a", "b"}
    # each ran in its host's workdir, never in the local project
    cwds = {cwd for _, tag, cwd in lines(tmp / "side" / "started.log")}
    assert cwds == {str(tmp / "host_a"), str(tmp / "host_b")}
    sweep = tmp / "sweep"
    for i in range(RUNS):  # job dirs copied back into the usual local layout
        assert (sweep / str(i) / "artifact.txt").read_text().split()[0] == str(i)
        assert (sweep / str(i) / ".hydra" / "overrides.yaml").exists()
    records = SweepManifest(sweep).records().values()
    assert len(records) == RUNS and {r.status for r in records} == {"completed"}
    assert {r.host for r in records} == {f"127.0.0.1_{PORT_A}", f"127.0.0.1_{PORT_B}"}
    assert all(r.job_dir == str(sweep / str(r.index)) for r in records)  # the local copy, not the host's
    # the localized JobReturn gave the journal its job_dir (above); the hand-offs themselves are
    # read once and removed, since they carry the task's config
    assert not list((sweep / ".mfcl" / "results").glob("*.pkl"))
    for port in (PORT_A, PORT_B):
        assert (sweep / "logs" / "sources" / f"127.0.0.1_{port}.log").exists()


@pytest.fixture
def doomed_host(project: Path):
    """A third sshd instance (own state dir and key) that a test may kill with all its sessions."""
    state = Path("/tmp/mfcl-ssh-doomed")
    env = {**os.environ, "MFCL_SSH_DIR": str(state), "MFCL_SSH_PORTS": str(DOOMED_PORT)}
    subprocess.run([str(REPO / SSH_SCRIPT), "start"], env=env, check=True, capture_output=True)
    kh = project.parent / "known_hosts"
    key = (state / str(DOOMED_PORT) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    kh.write_text(kh.read_text() + f"[127.0.0.1]:{DOOMED_PORT} {' '.join(key)}\n")
    yield lambda: subprocess.run([str(REPO / SSH_SCRIPT), "stop"], env=env, check=True, capture_output=True)
    subprocess.run([str(REPO / SSH_SCRIPT), "stop"], env=env, capture_output=True)


def test_host_dies_mid_sweep_its_runs_go_elsewhere(project: Path, doomed_host):
    tmp = project.parent
    doomed = host(DOOMED_PORT, tmp / "host_a", "a",
                  extra=f",ssh_options:[{quote_override_value('IdentityFile=/tmp/mfcl-ssh-doomed/id_ed25519')}]")
    argv = sweep_argv(project, [host(PORT_B, tmp / "host_b", "b"), doomed], "x=range(6)", "sleep_s=0.2",
                      "slow_tag=a", "slow_s=120", "hydra.launcher.dead_after_s=3",
                      "hydra.launcher.health_check_interval_s=1")
    proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len([t for _, t, _ in lines(tmp / "side" / "started.log") if t == "a"]) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no run started on the doomed host"
            time.sleep(0.1)
        doomed_host()  # sshd and every session it serves: the host is gone
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    started_on_a = {int(x) for x, t, _ in lines(tmp / "side" / "started.log") if t == "a"}
    done = lines(tmp / "side" / "done.log")
    assert sorted(int(x) for x, _ in done) == list(range(6))  # each ran to completion exactly once
    assert {t for _, t in done} == {"b"} and started_on_a
    health = (tmp / "sweep" / "logs" / "health_status.log").read_text()
    assert f"host=127.0.0.1_{DOOMED_PORT} event=disabled" in health and "unreachable" in health
    records = {r.index: r for r in SweepManifest(tmp / "sweep").records().values()}
    for x in started_on_a:
        assert records[x].status == "completed" and records[x].host == f"127.0.0.1_{PORT_B}"
        assert records[x].preemptions >= 1


def test_out_of_sync_is_refused_and_rsync_fixes_it(project: Path):
    tmp = project.parent
    (project / "extra.py").write_text("X = 1\n")
    (project / "scratch.tmp").write_text("ignored by .gitignore\n")
    git("add", "extra.py", cwd=project)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "second", cwd=project)
    local, remote = git("rev-parse", "HEAD", cwd=project), git("rev-parse", "HEAD", cwd=tmp / "host_a")
    hosts = [host(PORT_A, tmp / "host_a", "a")]
    p = run_sweep(project, hosts, "x=range(2)")
    assert p.returncode != 0
    assert f"127.0.0.1_{PORT_A}" in p.stderr and local in p.stderr and remote in p.stderr
    assert not (tmp / "side" / "started.log").exists()  # refused before anything ran
    p = run_sweep(project, hosts, "x=range(2)", "hydra.launcher.sync=rsync")
    assert p.returncode == 0, p.stderr[-3000:]
    assert git("rev-parse", "HEAD", cwd=tmp / "host_a") == local
    assert (tmp / "host_a" / "extra.py").exists() and not (tmp / "host_a" / "scratch.tmp").exists()
    assert (tmp / "host_a" / ".mfcl-remote").is_dir()


def test_override_values_reach_the_task_byte_for_byte(project: Path):
    tmp = project.parent
    Path("/tmp/mfcl-ssh-pwned").unlink(missing_ok=True)
    p = run_sweep(project, [host(PORT_A, tmp / "host_a", "a")], "x=7", f"v={quote_override_value(INJECTION)}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp / "side" / "v-7.bin").read_bytes() == INJECTION.encode()
    assert not Path("/tmp/mfcl-ssh-pwned").exists()


def test_unknown_host_key_is_refused_with_a_clear_error(project: Path):
    tmp = project.parent
    SSH_HOSTS.write_known_hosts(tmp / "known_hosts", ports=(PORT_B,))
    p = run_sweep(project, [host(PORT_A, tmp / "host_a", "a")], "x=range(2)")
    assert p.returncode != 0
    assert f"ssh host root@127.0.0.1:{PORT_A}" in p.stderr and "host key is not known" in p.stderr
    assert f"ssh-keyscan -p {PORT_A} 127.0.0.1" in p.stderr
    assert not (tmp / "side" / "started.log").exists()


def test_cancel_records_kills_the_remote_group(project: Path):
    from mfcl_sweeps.backends.ssh.backend import cancel_records

    tmp = project.parent
    proc = subprocess.Popen(sweep_argv(project, [host(PORT_A, tmp / "host_a", "a", slots=1)], "x=0", "sleep_s=120"),
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        rec = None
        while rec is None or not rec.pgid:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
            rec = next(iter(SweepManifest(tmp / "sweep").records().values()), None)
        assert rec.host == f"127.0.0.1_{PORT_A}" and rec.extra["ssh"]["port"] == PORT_A
        assert cancel_records([rec]) == [rec.config_hash]
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    alive = subprocess.run([*SSH_HOSTS.ssh_argv(PORT_A, tmp / "known_hosts"), f"kill -0 -- -{rec.pgid} && echo alive"],
                           capture_output=True, text=True)
    assert "alive" not in alive.stdout
    assert not (tmp / "side" / "done.log").exists()
    assert json.loads(json.dumps(rec.to_dict()))["status"] == "running"
