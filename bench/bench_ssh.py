"""Per-job SSH overhead of mfcl_ssh: one shared (multiplexed) connection vs a fresh one per call.

Each "job" is what the backend does per run, on real sshd: start the supervisor (which writes
the job file and runs a no-op job), fetch the result file, copy the job dir back as a tar
stream. The job itself does nothing, so the time is the launcher's overhead.

    sudo scripts/ssh-test-hosts.sh start
    python bench/bench_ssh.py [--jobs 20] [--port 2201]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import parse_options
from mfcl_sweeps.backends.sshclient.transport import HostConn

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


def measure(port: int, jobs: int, multiplex: bool) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="mfcl-ssh-bench-") as control, \
            tempfile.TemporaryDirectory(prefix="mfcl-ssh-bench-work-") as work:
        opts = parse_options({"hosts": [{"host": "127.0.0.1", "port": port, "user": "root"}],
                              "identity_file": str(STATE / "id_ed25519"),
                              "known_hosts_file": str(STATE / "known_hosts"), "multiplex": multiplex})
        conn = HostConn(opts.hosts[0], opts, control)
        conn.run("true")  # the first connection (the master, when multiplexing) is not a job's cost
        times = [one_job(conn, work, i, multiplex) for i in range(jobs)]
        conn.close()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--port", type=int, default=2201)
    args = parser.parse_args()
    shared = measure(args.port, args.jobs, multiplex=True)
    fresh = measure(args.port, args.jobs, multiplex=False)
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(f"per-job overhead over {args.jobs} jobs (median, 3 ssh calls each: start, result, job dir)")
    print(f"  multiplexed (ControlMaster):  {ms(shared):8.1f} ms")
    print(f"  fresh connection per call:    {ms(fresh):8.1f} ms")
    print(f"  ratio fresh / multiplexed:    {ms(fresh) / ms(shared):8.2f}x")


if __name__ == "__main__":
    main()
