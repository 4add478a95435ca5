"""Per-job SSH overhead of mfcl_ssh, side by side: the per-host agent (`hydra.launcher.agent=true`),
three ssh calls per job over one shared (multiplexed) connection, and a fresh connection per call.

Each "job" is what the backend does per run, on real sshd: write the job file and run a no-op
job that leaves a job dir and a result file, bring the result back, copy the job dir back as a
tar stream. Calls: start the supervisor, cat the result, tar the job dir. Agent: a start request
(the result comes with the exit event) and a tar request, on the agent's one channel, started
once before the jobs. The job itself does nothing, so the time is the launcher's overhead.

    sudo scripts/ssh-test-hosts.sh start
    python bench/bench_ssh.py [--jobs 20] [--port 2201]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import parse_options
from mfcl_sweeps.backends.sshclient.transport import HostConn, unpack_tar

STATE = Path("/tmp/mfcl-ssh")


def one_job(conn: HostConn, work: str, i: int, multiplex: bool) -> float:
    t0 = time.perf_counter()
    job_dir = f"{work}/{i}"
    script = cmd.job_script(workdir=work, python=sys.executable, env={}, job_path=f"{work}/jobs/{i}.json",
                            job_json='{"i": %d}' % i, grace_s=1,
                            worker_argv=["sh", "-c", f"mkdir -p {job_dir} && echo done > {job_dir}/result"])
    # stdin stays open while the job runs, as in the backend (its EOF would stop the job)
    p = subprocess.Popen(conn.argv(script, multiplex=multiplex), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err = p.stderr.read().decode()
    assert p.wait() == 0 and f"{cmd.EXIT_MARK} 0" in err, err
    p.stdin.close()
    assert conn.run(cmd.cat_script(f"{job_dir}/result"), multiplex=multiplex).out == b"done\n"
    with tempfile.TemporaryDirectory() as local:
        fetched = subprocess.run(conn.argv(cmd.tar_out_script(job_dir), multiplex=multiplex), capture_output=True)
        subprocess.run(["tar", "-xf", "-", "-C", local], input=fetched.stdout, check=True)
    return time.perf_counter() - t0


def agent_job(agent: subprocess.Popen, work: str, i: int) -> float:
    t0 = time.perf_counter()
    job_dir = f"{work}/{i}"
    send = lambda **req: (agent.stdin.write((json.dumps(req) + "\n").encode()), agent.stdin.flush())  # noqa: E731
    send(op="start", id=str(i), job_path=f"{work}/jobs/{i}.json", job_json='{"i": %d}' % i,
         argv=["sh", "-c", f"mkdir -p {job_dir} && echo done > {job_dir}/result"], result_path=f"{job_dir}/result")
    events = iter(lambda: json.loads(agent.stdout.readline()), None)
    end = next(e for e in events if e["ev"] == "exit")
    assert end["code"] == 0 and base64.b64decode(end["result"]) == b"done\n", end
    send(op="tar", id=f"t{i}", root=work, dirs=[str(i)], limit=1 << 20)
    reply = next(e for e in events if e["ev"] == "tar")
    with tempfile.TemporaryDirectory() as local:
        assert unpack_tar(base64.b64decode(reply["b64"]), local) is None  # as the backend does
    return time.perf_counter() - t0


def measure(port: int, jobs: int, mode: str) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="mfcl-ssh-bench-") as control, \
            tempfile.TemporaryDirectory(prefix="mfcl-ssh-bench-work-") as work:
        opts = parse_options({"hosts": [{"host": "127.0.0.1", "port": port, "user": "root"}],
                              "identity_file": str(STATE / "id_ed25519"),
                              "known_hosts_file": str(STATE / "known_hosts"), "multiplex": mode != "fresh"})
        conn = HostConn(opts.hosts[0], opts, control)
        conn.run("true")  # the first connection (the master, when multiplexing) is not a job's cost
        if mode == "agent":  # started once per host, like the connection
            agent = conn.channel(cmd.agent_script(workdir=work, python=sys.executable, env={}, grace_s=1))
            assert json.loads(agent.stdout.readline())["ev"] == "ready"
            times = [agent_job(agent, work, i) for i in range(jobs)]
            agent.stdin.close()
            agent.wait()
        else:
            times = [one_job(conn, work, i, mode == "multiplexed") for i in range(jobs)]
        conn.close()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--port", type=int, default=2201)
    args = parser.parse_args()
    ms = {mode: statistics.median(measure(args.port, args.jobs, mode)) * 1000
          for mode in ("agent", "multiplexed", "fresh")}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"per-job overhead over {args.jobs} jobs (median; load average {load} on {os.cpu_count()} cores)")
    print(f"  agent, one channel per host:            {ms['agent']:8.1f} ms")
    print(f"  multiplexed, 3 ssh calls (ControlMaster): {ms['multiplexed']:6.1f} ms")
    print(f"  fresh connection per call, 3 calls:     {ms['fresh']:8.1f} ms")
    print(f"  ratio multiplexed / agent:              {ms['multiplexed'] / ms['agent']:8.1f}x")
    print(f"  ratio fresh / agent:                    {ms['fresh'] / ms['agent']:8.1f}x")
    print(f"  ratio fresh / multiplexed:              {ms['fresh'] / ms['multiplexed']:8.1f}x")


if __name__ == "__main__":
    main()
