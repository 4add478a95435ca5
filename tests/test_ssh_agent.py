"""`hydra.launcher.agent`: one agent per host runs every job over one channel (the default).

The protocol tests run the agent itself as a local process (what ssh would start on a host);
the sweeps run over real sshd on 127.0.0.1 (scripts/ssh-test-hosts.sh), with the project and
helpers of test_ssh_launcher. Since the agent is the default, test_ssh_launcher's host death,
byte-exact values and `cancel_records` tests run through it too; here: one channel per host,
Ctrl-C through the agent, and the per-job path (`agent=false`) that stays available.
"""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from services import SSH_HOSTS
from test_ssh_launcher import INJECTION, PORT_A, PORT_B, host, lines, project, run_sweep, sweep_argv, two_hosts  # noqa: F401 (fixtures)

from mfcl_sweeps.backends.sshclient.transport import unpack_tar
from mfcl_sweeps.spec.overrides import quote_override_value
from mfcl_sweeps.state.manifest import SweepManifest

AGENT = [sys.executable, "-m", "mfcl_sweeps.backends.ssh_agent", "--grace", "1"]


class AgentProc:
    """The agent on this machine, spoken to in its JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(AGENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert self.next()["ev"] == "ready"

    def send(self, **req) -> None:
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()

    def next(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the agent ended"
        return json.loads(line)

    def until(self, kind: str, jid: str) -> tuple[dict, bytes]:
        """The first `kind` event of job `jid`, and the output the job wrote before it."""
        out = b""
        while True:
            ev = self.next()
            if ev.get("id") == jid and ev["ev"] == "out":
                out += base64.b64decode(ev["b64"])
            elif ev.get("id") == jid and ev["ev"] == kind:
                return ev, out


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pgid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_alive(pgid)


def test_agent_runs_a_job_with_exact_values_and_returns_output_result_and_dirs(tmp_path: Path):
    agent = AgentProc()
    agent.proc.stdin.write(b"not json\n")
    agent.send(op="start", id="x")  # no job: reported, and the agent carries on
    agent.send(op="reboot")
    assert [agent.next()["ev"] for _ in range(3)] == ["error"] * 3
    job_json = json.dumps({"v": INJECTION})
    script = f"echo out; echo err >&2; mkdir -p {tmp_path}/jobs/0; echo art > {tmp_path}/jobs/0/a.txt; " \
             f"printf res > {tmp_path}/result.pkl; exit 3"
    agent.send(op="start", id="0", job_path=str(tmp_path / "spec" / "0.json"), job_json=job_json,
               argv=["sh", "-c", script], result_path=str(tmp_path / "result.pkl"))
    started, _ = agent.until("started", "0")
    end, out = agent.until("exit", "0")
    assert started["pid"] > 0 and out == b"out\nerr\n"
    assert end["code"] == 3 and base64.b64decode(end["result"]) == b"res"
    assert (tmp_path / "spec" / "0.json").read_text() == job_json  # no shell saw it
    assert not Path("/tmp/mfcl-ssh-pwned").exists()
    agent.send(op="tar", id="t", root=str(tmp_path), dirs=["jobs/0", "missing"], limit=1 << 20)
    reply = agent.next()
    dest = tmp_path / "back"
    dest.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(dest)], input=base64.b64decode(reply["b64"]), check=True)
    assert (dest / "jobs" / "0" / "a.txt").read_text() == "art\n"
    agent.send(op="tar", id="t2", root=str(tmp_path), dirs=["jobs/0"], limit=1)
    assert agent.next() == {"ev": "tar", "id": "t2", "big": True}
    agent.proc.stdin.close()
    assert agent.proc.wait(timeout=10) == 0


def test_agent_kill_and_stdin_eof_end_the_whole_process_group(tmp_path: Path):
    agent = AgentProc()
    # a job that ignores TERM and leaves a child in its group: only the KILL after the grace ends it
    stubborn = ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300; wait"]
    for jid in ("killed", "orphaned"):
        agent.send(op="start", id=jid, job_path=str(tmp_path / f"{jid}.json"), job_json="{}", argv=stubborn,
                   result_path=str(tmp_path / "none"))
    pids = {jid: agent.until("started", jid)[0]["pid"] for jid in ("killed", "orphaned")}
    agent.send(op="kill", id="killed")
    end, _ = agent.until("exit", "killed")
    assert end["code"] == -signal.SIGKILL and end["result"] is None
    assert wait_gone(pids["killed"]) and group_alive(pids["orphaned"])
    agent.proc.stdin.close()  # the driver or its connection is gone
    assert agent.proc.wait(timeout=10) == 0
    assert wait_gone(pids["orphaned"])


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_job_dirs_from_a_host_unpack_only_inside_the_sweep_dir(tmp_path: Path):
    dest = tmp_path / "sweep"
    dest.mkdir()
    assert unpack_tar(_tar({"3/.hydra/config.yaml": b"x: 3\n"}), str(dest)) is None
    assert (dest / "3" / ".hydra" / "config.yaml").read_bytes() == b"x: 3\n"
    assert unpack_tar(_tar({"../escaped.txt": b"no"}), str(dest))  # an error, and nothing outside
    assert unpack_tar(_tar({str(tmp_path / "abs.txt"): b"in"}), str(dest)) is None  # made relative to dest
    assert (dest / str(tmp_path / "abs.txt").lstrip("/")).read_bytes() == b"in"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs.txt").exists()


@pytest.mark.ssh
def test_agent_sweep_over_two_hosts_one_channel_each(project: Path):
    tmp = project.parent
    p = run_sweep(project, two_hosts(tmp), "x=range(6)", "hydra.launcher.agent=true")
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(int(x) for x, _ in lines(tmp / "side" / "done.log")) == list(range(6))
    sweep = tmp / "sweep"
    records = SweepManifest(sweep).records().values()
    assert len(records) == 6 and {r.status for r in records} == {"completed"}
    assert {r.host for r in records} == {f"127.0.0.1_{PORT_A}", f"127.0.0.1_{PORT_B}"}
    for r in records:  # job dirs came back, results were localized, output was streamed
        assert (sweep / str(r.index) / "artifact.txt").read_text().split()[0] == str(r.index)
        assert r.job_dir == str(sweep / str(r.index)) and r.pgid
    for port in (PORT_A, PORT_B):  # one agent per host for the whole sweep
        log = (sweep / "logs" / "sources" / f"127.0.0.1_{port}.log").read_text()
        assert log.count("agent ready") == 1, log


@pytest.mark.ssh
def test_without_the_agent_each_job_has_its_own_channel(project: Path):
    tmp = project.parent
    Path("/tmp/mfcl-ssh-pwned").unlink(missing_ok=True)
    p = run_sweep(project, [host(PORT_A, tmp / "host_a", "a")], "x=0,1", f"v={quote_override_value(INJECTION)}",
                  "hydra.launcher.agent=false")
    assert p.returncode == 0, p.stderr[-3000:]
    for x in (0, 1):
        assert (tmp / "side" / f"v-{x}.bin").read_bytes() == INJECTION.encode()
        assert (tmp / "sweep" / str(x) / "artifact.txt").exists()
    assert not Path("/tmp/mfcl-ssh-pwned").exists()
    assert "agent ready" not in (tmp / "sweep" / "logs" / "sources" / f"127.0.0.1_{PORT_A}.log").read_text()


@pytest.mark.ssh
def test_agent_cancel_and_timeout_kill_the_remote_groups(project: Path):
    from mfcl_sweeps.backends.ssh.backend import cancel_records

    tmp = project.parent
    hosts = [host(PORT_A, tmp / "host_a", "a", slots=2)]
    argv = sweep_argv(project, hosts, "x=0,1", "sleep_s=120", "hydra.launcher.agent=true",
                      "hydra.launcher.kill_grace_s=1", "hydra.launcher.timeout=8")
    proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        recs: list = []
        while len(recs) < 2 or not all(r.pgid for r in recs):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.2)
            recs = sorted(SweepManifest(tmp / "sweep").records().values(), key=lambda r: r.index)
        assert cancel_records(recs[:1]) == [recs[0].config_hash]  # `mfcl-sweeps cancel` of run 0
        # run 1 ends only through the agent's kill at its timeout (else it sleeps 120 s)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    for rec in recs:
        alive = subprocess.run([*SSH_HOSTS.ssh_argv(PORT_A, tmp / "known_hosts"),
                                f"kill -0 -- -{rec.pgid} 2>/dev/null && echo alive"], capture_output=True, text=True)
        assert "alive" not in alive.stdout, rec.index
    assert not (tmp / "side" / "done.log").exists()
    timed_out = SweepManifest(tmp / "sweep").records()[recs[1].config_hash]
    assert "timed out" in (timed_out.error or ""), timed_out
