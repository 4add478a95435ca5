"""`hydra/launcher=mfcl_pool` end to end on the real services: local slots, the two loopback sshd
hosts (scripts/ssh-test-hosts.sh) and the one-node Slurm cluster (scripts/slurm-test-cluster.sh).

The task (tests/apps/ssh_app) appends a line to side/started.log when it starts and to
side/done.log when it finishes, so runs are counted where they execute, not only in the journal.
Sources come from launcher presets (conf/hydra/launcher/<name>.yaml, as `mfcl-sweeps init` writes
them) named in the short form `[local:2,ssh:a:2,ssh:b:2,slurm:cluster:3]`.
"""
from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import SLURM_PARTITION, SSH_HOSTS, require_service
from test_ssh_launcher import DOOMED_PORT, doomed_host, lines, project  # noqa: F401  (fixtures used below)

from mfcl_sweeps.state.manifest import SweepManifest

pytestmark = [pytest.mark.ssh, pytest.mark.slow]
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


@pytest.mark.slurm
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


@pytest.mark.ssh
def test_an_ssh_source_dies_mid_sweep_its_runs_finish_elsewhere_and_the_health_log_says_so(
        project: Path, doomed_host):  # noqa: F811
    require_service("ssh")
    tmp = project.parent
    write_presets(tmp, {"b": PORT_B, "doomed": DOOMED_PORT})
    argv = pool_argv(project, "[local:1,ssh:b:2,ssh:doomed:2]", "x=range(12)", "sleep_s=0.5", "slow_tag=doomed",
                     "slow_s=120", "hydra.launcher.health_check_interval_s=1")
    proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len([t for _, t, _ in lines(tmp / "side" / "started.log") if t == "doomed"]) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no run started on the doomed source"
            time.sleep(0.1)
        doomed_host()  # its sshd and every session it serves: the source is gone
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    started_on_doomed = {int(x) for x, t, _ in lines(tmp / "side" / "started.log") if t == "doomed"}
    assert counts(tmp / "side" / "done.log") == {x: 1 for x in range(12)}  # each completed exactly once
    assert started_on_doomed and all(t != "doomed" for _, t in lines(tmp / "side" / "done.log"))
    recs = records(tmp / "sweep")
    for x in started_on_doomed:  # requeued as preempted, not failed, and finished on another source
        assert recs[x].status == "completed" and recs[x].preemptions >= 1 and recs[x].extra["source"] != "doomed"
    health = (tmp / "sweep" / "logs" / "health_status.log").read_text()
    assert "source=doomed event=lost" in health and "source=doomed event=disabled" in health, health


@pytest.mark.slurm
def test_complete_after_the_driver_is_killed_runs_only_the_unfinished_runs_on_other_sources(
        project: Path, services):  # noqa: F811
    tmp = project.parent
    write_presets(tmp, {"a": PORT_A, "b": PORT_B})
    sweep = tmp / "sweep"
    driver = subprocess.Popen(pool_argv(project, "[ssh:a:2,ssh:b:2]", "x=range(12)", "sleep_s=2"), cwd=project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while sum(r.status == "completed" for r in records(sweep).values()) < 3:
            assert driver.poll() is None and time.monotonic() < deadline, "no run completed on the SSH sources"
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    time.sleep(3)  # the hosts' supervisors end the jobs whose channel closed
    finished = {x for x, r in records(sweep).items() if r.status == "completed"}
    started_before = counts(tmp / "side" / "started.log")
    assert 3 <= len(finished) < 12
    p = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "complete", str(sweep),
                        f"hydra.launcher.preset_dir={tmp / 'presets'}", "--sources", "local:2,slurm:cluster:3"],
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "hydra/launcher=mfcl_pool" in p.stdout and "hydra.launcher.hosts" not in p.stdout
    started_after = counts(tmp / "side" / "started.log") - started_before
    assert started_after == {x: 1 for x in range(12) if x not in finished}  # only the unfinished, once each
    recs = records(sweep)
    assert {r.status for r in recs.values()} == {"completed"}
    assert {recs[x].extra["source"] for x in range(12) if x not in finished} <= {"local", "cluster"}
    assert {recs[x].extra["source"] for x in finished} <= {"a", "b"}


@pytest.fixture
def partition_down():
    """The test partition held DOWN (jobs queue, none starts); UP again whatever happens."""
    require_service("slurm")
    subprocess.run(["scontrol", "update", f"PartitionName={SLURM_PARTITION}", "State=DOWN"], check=True)
    try:
        yield lambda: subprocess.run(["scontrol", "update", f"PartitionName={SLURM_PARTITION}", "State=UP"],
                                     check=True)
    finally:
        subprocess.run(["scontrol", "update", f"PartitionName={SLURM_PARTITION}", "State=UP"], check=True)


@pytest.mark.slurm
def test_runs_stuck_in_a_held_partition_move_to_a_free_source_after_max_queue_wait_and_complete_once(
        project: Path, partition_down):  # noqa: F811
    tmp = project.parent
    write_presets(tmp, {})
    p = subprocess.run(pool_argv(project, "[local:1,slurm:cluster:3]", "x=range(6)", "sleep_s=0.5",
                                 "hydra.launcher.max_queue_wait_s=3"),
                       cwd=project, capture_output=True, text=True, timeout=300)
    partition_down()  # up again before asserting: nothing may start late and run a second time
    assert p.returncode == 0, p.stderr[-3000:]
    time.sleep(2)
    assert counts(tmp / "side" / "started.log") == {x: 1 for x in range(6)}  # none ran twice
    recs = records(tmp / "sweep")
    moved = [r for r in recs.values() if r.preemptions]
    assert moved and all(r.status == "completed" and r.extra["source"] == "local" for r in recs.values())
    health = (tmp / "sweep" / "logs" / "health_status.log").read_text()
    assert health.count("source=cluster event=withdrawn") == len(moved)
    assigned = (tmp / "sweep" / "logs" / "task_assignments.log").read_text()
    for r in moved:  # first queued on the cluster, then run on local
        assert f"run={r.run_id} attempt=1 source=cluster" in assigned
        assert f"run={r.run_id} attempt=2 source=local" in assigned
    queue = subprocess.run(["squeue", "-h", "-p", SLURM_PARTITION, "-o", "%i %T"], capture_output=True, text=True)
    assert not any(r.backend_job_id and r.backend_job_id in queue.stdout for r in moved), queue.stdout


@pytest.mark.slurm
def test_runs_asking_for_gpus_only_go_to_the_source_that_declares_them(project: Path, services):  # noqa: F811
    tmp = project.parent
    write_presets(tmp, {"a": PORT_A})
    sweep_file = tmp / "sweep.yaml"
    sweep_file.write_text("groups:\n  - group: cpu\n    params: {x: [0, 1, 2, 3]}\n"
                          "  - group: gpu\n    gpus_per_node: 2\n    params: {x: [10, 11, 12]}\n")
    # only the SSH host declares GPUs (the test cluster has none: its source declares 0)
    sources = "[local:2,{kind:ssh,preset:a,name:a,gpus:2},{kind:slurm,preset:cluster,name:cluster,slots:2,gpus:0}]"
    p = subprocess.run(pool_argv(project, sources, f"hydra.sweeper.sweep_file={sweep_file}",
                                 "hydra.launcher.strategy=round_robin"),
                       cwd=project, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = records(tmp / "sweep")
    assert {r.extra["source"] for r in recs.values() if r.group == "gpu"} == {"a"}
    assert {r.extra["source"] for r in recs.values() if r.group == "cpu"} - {"a"}  # the others took cpu runs
    assert counts(tmp / "side" / "done.log") == {x: 1 for x in (0, 1, 2, 3, 10, 11, 12)}


@pytest.mark.slurm
def test_complete_re_attaches_runs_a_scheduler_still_holds_instead_of_submitting_them_again(
        project: Path, partition_down):  # noqa: F811
    tmp = project.parent
    write_presets(tmp, {})
    sweep = tmp / "sweep"
    driver = subprocess.Popen(pool_argv(project, "[slurm:cluster:3]", "x=range(3)", "sleep_s=6"), cwd=project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (len(recs := records(sweep)) == 3 and all(r.backend_job_id for r in recs.values())):
            assert driver.poll() is None and time.monotonic() < deadline, "the runs were not queued"
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    jobs = {x: r.backend_job_id for x, r in records(sweep).items()}
    scripts = sorted((sweep / ".mfcl" / "slurm").glob("*.sh"))
    partition_down()  # up: the queued jobs start, with no driver following them
    p = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "complete", str(sweep),
                        f"hydra.launcher.preset_dir={tmp / 'presets'}", "--sources", "local:1,slurm:cluster:3"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "re-attached by job id" in p.stdout + p.stderr
    assert counts(tmp / "side" / "started.log") == {0: 1, 1: 1, 2: 1}  # each ran once, in its first job
    assert sorted((sweep / ".mfcl" / "slurm").glob("*.sh")) == scripts  # nothing submitted again
    recs = records(sweep)
    assert {r.status for r in recs.values()} == {"completed"}
    assert {x: r.backend_job_id for x, r in recs.items()} == jobs
