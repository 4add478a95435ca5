"""mfcl_pool over the source kinds and failure paths test_pool_services does not reach: torchrun
and PBS (the front end over the Slurm test cluster) as sources, a scheduler that stops answering
(its in-flight runs declared lost after `lost_after_s`), and every source down for
`all_down_timeout_s` (the launch stops with one line). The pool backend is driven as the driver
loop drives it, with the contract suite's session and requests (tests/test_backend_contract.py).
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from services import SLURM_PARTITION, require_service
from test_backend_contract import Sweep, outcome, submit_all, sweep, wait_done, wait_for  # noqa: F401 (fixture)

from mfcl_sweeps import model
from mfcl_sweeps.backends.pool.backend import PoolBackend
from mfcl_sweeps.backends.pool.runtime import HELD, AllSourcesDown

SCHEDULER_POLL = {"timeout_min": 5, "poll_min_s": 0.2, "poll_max_s": 1, "python": sys.executable}


def pool_for(sweep: Sweep, sources: list[dict], **options) -> PoolBackend:  # noqa: F811
    return PoolBackend.from_options({"sources": sources, **options}, session=sweep.session)


def health_log(sweep: Sweep) -> str:  # noqa: F811
    return (sweep.dir / "logs" / "health_status.log").read_text()


@pytest.mark.slow
@pytest.mark.slurm
def test_torchrun_and_pbs_sources_run_their_share_and_report_a_failure(sweep: Sweep):  # noqa: F811
    require_service("pbs")
    pool = pool_for(sweep, [{"kind": "torchrun", "name": "ddp", "slots": 1, "nproc_per_node": 1, "pack_gpus": False},
                            {"kind": "pbs", "name": "hpc", "slots": 1, "frontend": "slurm", **SCHEDULER_POLL}],
                    strategy="round_robin")
    try:
        requests = sweep.requests("pool", ("ok", {}), ("raise", {}))
        handles = submit_all(pool, requests)
        kinds = [h.data["journal_fields"]["source_kind"] for h in handles]
        assert kinds == ["torchrun", "pbs"], kinds  # round robin over the two
        states = wait_done(pool, handles)
        assert outcome(requests[0], states[handles[0].key])[0] == model.COMPLETED, states[handles[0].key]
        status, fields = outcome(requests[1], states[handles[1].key])
        assert status == model.FAILED and "boom on value 1" in fields["error"], fields
        assert states[handles[1].key].exit_code not in (None, 0), states[handles[1].key]
        assert [s.started for s in pool.sources] == [1, 1] and pool.capacity() == 2  # both slots free again
    finally:
        pool.close()


@pytest.mark.slurm
@pytest.mark.parametrize("started", [True, False], ids=["running", "queued"])
def test_runs_of_a_scheduler_that_stops_answering_are_declared_lost_after_lost_after_s(
        sweep: Sweep, tmp_path: Path, monkeypatch, started: bool):  # noqa: F811
    require_service("slurm")
    queued = {} if started else {"additional_parameters": {"begin": "now+1hour"}}  # stays pending
    pool = pool_for(sweep, [{"kind": "slurm", "name": "cluster", "slots": 1, "partition": SLURM_PARTITION,
                             **SCHEDULER_POLL, **queued}], lost_after_s=1.5, health_check_interval_s=600)
    (req,) = sweep.requests("pool", ("sleep", {"seconds": 120}))
    (handle,) = submit_all(pool, [req])
    try:
        if started:
            wait_for(lambda: (s := pool.poll([handle])[handle.key]).running and not s.done, "the run started", 60)
        # the login node loses its Slurm commands: squeue/sacct fail, the source does not answer
        monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
        first = time.monotonic()

        def disabled() -> bool:
            assert not pool.poll([handle])[handle.key].done  # not lost yet: it may still be running
            return not pool.by_name["cluster"].health.enabled

        wait_for(disabled, "the source disabled", timeout=10)  # at its poller's next query
        assert "source=cluster event=disabled reason=\"unreachable: sacct: command not found" in health_log(sweep)
        assert pool.capacity() == 0  # a disabled source takes no new run
        state = wait_for(lambda: (s := pool.poll([handle])[handle.key]).done and s, "declared lost", timeout=30)
        assert time.monotonic() - first >= 1.5
        # preempted, not failed: the driver requeues it without spending a retry; a queued run's
        # withdrawal (scancel) did not answer either, so it is lost, not withdrawn
        assert state.preempted and "source cluster unreachable for 1.5s: declared lost" in state.error, state
        assert "source=cluster event=lost runs=1 after=1.5s" in health_log(sweep)
        assert ("event=withdrawn" in health_log(sweep)) is not started
    finally:
        monkeypatch.undo()
        pool.cancel([handle])  # the job itself is still on the cluster
        pool.close()


# Test double of a stopped slurmctld, on this test's PATH only (the shared cluster's slurmctld
# stays up for the other tests): the controller's commands fail with Slurm 22.05's own words;
# sacct still answers (slurmdbd is up), as it does when only slurmctld is down.
CONTROLLER_DOWN = {
    "sbatch": "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
    "squeue": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
    "scancel": "scancel: error: Kill job error on job id $2: Unable to contact slurm controller (connect failure)",
}


def stopped_slurmctld_double(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "slurmctld-stopped-double"
    bin_dir.mkdir()
    for name, said in CONTROLLER_DOWN.items():
        (bin_dir / name).write_text(f"#!/bin/sh\necho \"{said}\" >&2\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.slurm
def test_a_slurm_source_whose_controller_fails_is_unreachable_its_runs_go_elsewhere_and_it_comes_back(
        sweep: Sweep, tmp_path: Path, monkeypatch):  # noqa: F811
    require_service("slurm")
    pool = pool_for(sweep, [{"kind": "slurm", "name": "cluster", "slots": 2, "partition": SLURM_PARTITION,
                             **SCHEDULER_POLL, "additional_parameters": {"begin": "now+1hour"}},  # stays queued
                            {"kind": "local", "name": "laptop", "slots": 1}],
                    strategy="round_robin", max_controller_errors=2, lost_after_s=1.5, health_check_interval_s=1)
    queued, later, third = sweep.requests("pool", ("ok", {}), ("ok", {}), ("ok", {}))
    (handle,) = submit_all(pool, [queued])
    try:
        assert handle.data["journal_fields"]["source"] == "cluster"
        monkeypatch.setenv("PATH", f"{stopped_slurmctld_double(tmp_path)}:{os.environ['PATH']}")
        # round robin: `later` to laptop, `third` to cluster, whose sbatch fails and whose
        # controller does not answer either: `third` is not failed, the pool holds it
        h_later, h_third = submit_all(pool, [later, third])
        assert h_later.data["journal_fields"]["source"] == "laptop" and h_third.backend_job_id == HELD
        assert not pool.poll([h_third])[h_third.key].done
        assert ("source=cluster event=controller-error count=1 reason='squeue exit 1: slurm_load_jobs error: "
                "Unable to contact slurm controller") in health_log(sweep)
        states = wait_done(pool, [handle, h_later, h_third], timeout=60)
        # the second error in a row (polling the queued run) makes it unreachable; its queued run,
        # whose withdrawal got no answer, is declared lost after lost_after_s and requeued by the driver
        assert ("source=cluster event=disabled reason='unreachable: 2 controller errors in a row, last: squeue exit 1"
                in health_log(sweep))
        assert states[handle.key].preempted and "declared lost" in states[handle.key].error, states[handle.key]
        for req, h in ((later, h_later), (third, h_third)):  # both ran on the laptop
            assert outcome(req, states[h.key])[0] == model.COMPLETED and h.data["flight"].source == "laptop"
        assert pool.capacity() == 1  # the laptop's slot; nothing is placed on the cluster
        monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])  # slurmctld answers again
        wait_for(lambda: pool.capacity() and pool.by_name["cluster"].health.enabled, "cluster re-enabled", 10)
        assert "source=cluster event=enabled reason='answers again'" in health_log(sweep)
        assert pool.capacity() == 3
    finally:
        monkeypatch.undo()
        pool.cancel([handle])  # its job is still queued on the cluster
        pool.close()


def test_every_source_down_for_all_down_timeout_s_stops_the_launch_with_one_line(sweep: Sweep):  # noqa: F811
    require_service("ssh")  # the ssh client; no sshd is asked: the port refuses
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: nobody answers there
    port = closed.getsockname()[1]
    pool = pool_for(sweep, [{"kind": "ssh", "name": "gone", "sync": "none", "python": sys.executable,
                             "hosts": [{"host": "127.0.0.1", "port": port, "slots": 2, "workdir": str(sweep.dir)}]}],
                    all_down_timeout_s=1, health_check_interval_s=600)
    try:
        assert pool.capacity() == 0  # disabled as unreachable, not stopped yet
        assert "source=gone event=disabled reason='unreachable:" in health_log(sweep)
        assert pool.capacity() == 0
        time.sleep(1.1)
        with pytest.raises(AllSourcesDown) as err:
            pool.capacity()
        line = str(err.value)
        assert "\n" not in line and line.startswith("every source has been disabled for 1s (gone: unreachable")
        assert f"port {port}: Connection refused" in line and "mfcl-sweeps complete" in line
    finally:
        pool.close()
        closed.close()
