"""The real services behind `@pytest.mark.slurm`, `pbs` and `ssh` tests, and how a test asks for them.

They are started outside pytest (they need root and take seconds):

    scripts/slurm-test-cluster.sh start   # one-node Slurm with accounting; also qsub/qstat/qdel
    scripts/ssh-test-hosts.sh start       # sshd on 127.0.0.1:2201 and :2202, root by key
    scripts/postgres-test.sh start        # PostgreSQL 15 on 127.0.0.1:5433 (role/db mfcl_test)

Use from a test module (tests/ is on sys.path, it has no __init__.py):

    from services import require_service, ssh_hosts, sacct_states

    @pytest.mark.slurm
    def test_x(tmp_path):
        require_service("slurm")
        ...

In CI (env CI=true) a missing service FAILS the test: CI must never go green by skipping.
Elsewhere it is skipped with a message naming the script to run.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

REPO = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = "scripts/slurm-test-cluster.sh"
SSH_SCRIPT = "scripts/ssh-test-hosts.sh"
PG_SCRIPT = "scripts/postgres-test.sh"
PG_URL = os.environ.get("MFCL_PG_URL", "postgresql://mfcl_test:mfcl-test-pw@127.0.0.1:5433/mfcl_test")

# The same defaults and variables as the scripts.
SSH_DIR = Path(os.environ.get("MFCL_SSH_DIR", "/tmp/mfcl-ssh"))
SSH_PORTS = tuple(int(p) for p in os.environ.get("MFCL_SSH_PORTS", "2201 2202").split())
SLURM_PARTITION = "debug"

TERMINAL_SLURM_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
     "BOOT_FAIL", "DEADLINE"}
)


def _ok(argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess | None:
    """Run argv; the finished process if it exited 0, else None (missing binary included)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return proc if proc.returncode == 0 else None


@functools.cache
def slurm_available() -> bool:
    """A usable node in the test partition and an answering accounting database."""
    sinfo = _ok(["sinfo", "-h", "-p", SLURM_PARTITION, "-o", "%t"])
    usable = sinfo is not None and any(
        s.rstrip("*") in {"idle", "mix", "alloc"} for s in sinfo.stdout.split()
    )
    return usable and _ok(["sacct", "-n", "-X", "-S", "now-1minutes"]) is not None


@functools.cache
def pbs_available() -> bool:
    """The PBS front ends of slurm-wlm-torque, over the test cluster."""
    return slurm_available() and all(shutil.which(c) for c in ("qsub", "qstat", "qdel"))


@dataclass(frozen=True)
class SshTestHosts:
    """The loopback hosts: root@127.0.0.1 on `ports`, logging in with `key`."""

    ports: tuple[int, ...]
    key: Path
    user: str = "root"
    address: str = "127.0.0.1"

    def host_key(self, port: int) -> str:
        """'ssh-ed25519 AAAA...' of the instance on `port`."""
        text = (SSH_DIR / str(port) / "ssh_host_ed25519_key.pub").read_text()
        return " ".join(text.split()[:2])

    def known_hosts(self, ports: tuple[int, ...] | None = None) -> str:
        """known_hosts text trusting the instances on `ports` (default: all)."""
        return "".join(
            f"[{self.address}]:{p} {self.host_key(p)}\n" for p in (ports or self.ports)
        )

    def write_known_hosts(self, path: Path, ports: tuple[int, ...] | None = None) -> Path:
        path.write_text(self.known_hosts(ports))
        return path

    def ssh_argv(self, port: int, known_hosts: Path, *extra: str) -> list[str]:
        """An ssh client command for one host, ignoring the user's ssh config, checking host keys."""
        return [
            "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(self.key),
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            *extra, f"{self.user}@{self.address}",
        ]


SSH_HOSTS = SshTestHosts(ports=SSH_PORTS, key=SSH_DIR / "id_ed25519")


@functools.cache
def ssh_available() -> bool:
    """Every instance accepts the test key and shows the host key the script recorded."""
    known = SSH_DIR / "known_hosts"
    if not (SSH_HOSTS.key.is_file() and known.is_file()):
        return False
    return all(_ok([*SSH_HOSTS.ssh_argv(p, known), "-n", "true"]) for p in SSH_HOSTS.ports)


@functools.cache
def postgres_available() -> bool:
    """The test role logs in to the test database at PG_URL."""
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:  # psycopg missing or the server down: either way not available
        return False


_SERVICES = {
    "slurm": (slurm_available, SLURM_SCRIPT),
    "pbs": (pbs_available, SLURM_SCRIPT),
    "ssh": (ssh_available, SSH_SCRIPT),
    "postgres": (postgres_available, PG_SCRIPT),
}


def require_service(name: str) -> None:
    """Skip (outside CI) or fail (in CI) the calling test unless service `name` is up."""
    if name not in _SERVICES:
        raise ValueError(f"unknown test service {name!r}; known: {', '.join(sorted(_SERVICES))}")
    available, script = _SERVICES[name]
    if available():
        return
    message = f"{name} test service is not running: start it with `sudo {script} start`"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def ssh_hosts() -> SshTestHosts:
    require_service("ssh")
    return SSH_HOSTS


def slurm_config() -> dict[str, str]:
    """`scontrol show config` as a dict (e.g. MaxArraySize, KillWait)."""
    out = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    pairs = (line.split("=", 1) for line in out.splitlines() if " = " in line)
    return {k.strip(): v.strip() for k, v in pairs}


def sacct_states(job_id: str) -> dict[str, tuple[str, str]]:
    """{job or array-task id: (state, exit code)} for the allocations of `job_id`, from sacct."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = (line.split("|") for line in out.splitlines() if line)
    # "CANCELLED by 0" carries the canceller's uid.
    return {jid: (state.split()[0], code) for jid, state, code in rows}


def wait_sacct_final(job_id: str, count: int = 1, timeout: float = 90) -> dict[str, tuple[str, str]]:
    """Poll sacct until `count` allocations of `job_id` are in a terminal state.

    sacct can lag squeue by a few seconds, so a missing row means "not yet", not "gone". For an
    array task (`job_id` "N_i") only its own row counts: sacct shows a task under its bare job id
    "N" for a moment after it ends (the launcher's query ignores that row too).
    """
    deadline = time.monotonic() + timeout
    while True:
        states = sacct_states(job_id)
        done = {k: v for k, v in states.items()
                if v[0] in TERMINAL_SLURM_STATES and ("_" not in job_id or k == job_id)}
        if len(done) >= count:
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: not {count} finished allocations after {timeout}s: {states}")
        time.sleep(0.5)
