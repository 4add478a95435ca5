"""The test services themselves: what every Slurm, PBS and SSH test relies on, checked for real."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from services import (
    SLURM_PARTITION,
    SshTestHosts,
    require_service,
    slurm_config,
    ssh_hosts,  # noqa: F401 (fixture)
    wait_sacct_final,
)


def sbatch(tmp_path: Path, command: str, *args: str) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", "-D", str(tmp_path), "-o", str(tmp_path / "slurm-%j.out"),
         *args, "--wrap", command],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.strip().split(";")[0]


@pytest.mark.slurm
def test_sacct_answers_and_config_is_the_test_cluster():
    require_service("slurm")
    subprocess.run(["sacct", "-n", "-X"], check=True, capture_output=True)
    config = slurm_config()
    # Facts the Slurm launcher tests depend on: fast requeue, short kill wait, accounting.
    assert config["JobRequeue"] == "1"
    assert config["KillWait"] == "5 sec"
    assert config["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert int(config["MaxArraySize"]) >= 10


@pytest.mark.slurm
def test_node_runs_several_one_cpu_tasks_at_once():
    require_service("slurm")
    cpus = subprocess.run(
        ["sinfo", "-h", "-p", SLURM_PARTITION, "-o", "%c"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(cpus[0]) >= 4


@pytest.mark.slurm
def test_sbatch_job_completes_and_sacct_says_completed(tmp_path):
    require_service("slurm")
    job = sbatch(tmp_path, "echo hello-from-slurm")
    assert wait_sacct_final(job) == {job: ("COMPLETED", "0:0")}
    assert (tmp_path / f"slurm-{job}.out").read_text().strip() == "hello-from-slurm"


@pytest.mark.slurm
def test_failing_sbatch_job_is_failed_in_sacct(tmp_path):
    require_service("slurm")
    job = sbatch(tmp_path, "exit 3")
    assert wait_sacct_final(job) == {job: ("FAILED", "3:0")}


@pytest.mark.slurm
def test_array_tasks_see_their_index_and_restart_count(tmp_path):
    require_service("slurm")
    job = sbatch(tmp_path, 'echo "$SLURM_ARRAY_TASK_ID ${SLURM_RESTART_COUNT:-0}"',
                 "--array=0-2", "-o", str(tmp_path / "out-%a"))
    assert set(wait_sacct_final(job, count=3).values()) == {("COMPLETED", "0:0")}
    assert sorted((tmp_path / f"out-{i}").read_text().split()[0] for i in range(3)) == ["0", "1", "2"]


@pytest.mark.slurm
def test_qsub_torque_array_runs_through_slurm(tmp_path):
    require_service("pbs")
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/bash\n#PBS -N mfcl-svc\necho "task=$SLURM_ARRAY_TASK_ID"\n')
    job = subprocess.run(
        ["qsub", "-t", "0-2", str(script)], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert job.isdigit(), job  # this front end prints only the numeric Slurm id
    # qstat knows the job while it exists; sacct holds the outcome afterwards.
    assert set(wait_sacct_final(job, count=3).values()) == {("COMPLETED", "0:0")}
    outputs = sorted(p.read_text().strip() for p in tmp_path.glob(f"job.sh.o{job}.*"))
    assert outputs == ["task=0", "task=1", "task=2"]


@pytest.mark.slurm
def test_qstat_of_unknown_job_fails(tmp_path):
    require_service("pbs")
    proc = subprocess.run(["qstat", "999999999"], capture_output=True, text=True)
    assert proc.returncode != 0


@pytest.mark.ssh
def test_ssh_to_both_hosts_with_a_written_known_hosts(ssh_hosts: SshTestHosts, tmp_path):
    known = ssh_hosts.write_known_hosts(tmp_path / "known_hosts")
    for port in ssh_hosts.ports:
        out = subprocess.run(
            [*ssh_hosts.ssh_argv(port, known), "-n", "echo", "port=$SSH_CONNECTION"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
        assert out.split()[-1] == str(port)  # SSH_CONNECTION ends with the server port


@pytest.mark.ssh
def test_unknown_host_key_is_refused(ssh_hosts: SshTestHosts, tmp_path):
    first, second = ssh_hosts.ports[:2]
    # Trust only the first host, then claim its key for the second: a key mismatch.
    text = ssh_hosts.known_hosts((first,)).replace(f":{first} ", f":{second} ")
    (tmp_path / "known_hosts").write_text(text)
    proc = subprocess.run(
        [*ssh_hosts.ssh_argv(second, tmp_path / "known_hosts"), "-n", "true"],
        capture_output=True, text=True, timeout=20,
    )
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


@pytest.mark.ssh
def test_host_missing_from_known_hosts_is_refused(ssh_hosts: SshTestHosts, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    proc = subprocess.run(
        [*ssh_hosts.ssh_argv(ssh_hosts.ports[0], known), "-n", "true"],
        capture_output=True, text=True, timeout=20,
    )
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr
    assert known.read_text() == ""  # nothing was learned


@pytest.mark.ssh
def test_eight_concurrent_sessions_over_one_multiplexed_connection(ssh_hosts: SshTestHosts, tmp_path):
    known = ssh_hosts.write_known_hosts(tmp_path / "known_hosts")
    port = ssh_hosts.ports[0]
    # A short socket dir: a unix socket path is limited to 108 bytes, tmp_path can exceed it.
    sockets = tempfile.TemporaryDirectory(prefix="mux", dir="/tmp")
    mux = ["-o", f"ControlPath={sockets.name}/%p", "-o", "ControlPersist=30"]
    # The master first: concurrent "ControlMaster=auto" clients would race to create it.
    subprocess.run([*ssh_hosts.ssh_argv(port, known, "-o", "ControlMaster=yes", *mux), "-fN"],
                   check=True, timeout=20)
    try:
        clients = [
            subprocess.Popen([*ssh_hosts.ssh_argv(port, known, "-o", "ControlMaster=no", *mux),
                              "-n", f"sleep 1; echo {i}"], stdout=subprocess.PIPE, text=True)
            for i in range(8)
        ]
        outs = [c.communicate(timeout=30)[0].strip() for c in clients]
        assert [c.returncode for c in clients] == [0] * 8
        assert outs == [str(i) for i in range(8)]
    finally:
        subprocess.run([*ssh_hosts.ssh_argv(port, known, *mux), "-O", "exit"],
                       capture_output=True, timeout=20)
        sockets.cleanup()
