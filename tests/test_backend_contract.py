"""The Backend contract, checked for every registered backend on its real service (like Hydra's
LauncherTestSuite, but for `mfcl_sweeps.backends.base.Backend`): local processes, torchrun
(gloo, CPU), the Slurm test cluster, the PBS front end over Slurm, and the loopback SSH hosts.

- `plan` is pure and deterministic: the same requests give the same text; no file, no process;
- `submit` returns one handle per request, in order, and the runs complete;
- a raising task polls as failed, with its exit code and its error line;
- a job killed from outside polls as failed (or preempted, where the scheduler says so);
- `cancel` leaves no process of the job behind;
- `capacity` is honoured: no more jobs run than it allowed.

A new backend adds one `Case` below and must pass. The jobs run the `behave` test app
(tests/apps/behave) through a session composed here as the launcher would compose it.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import cloudpickle
import pytest
from apprun import alive
from services import SSH_HOSTS, require_service

from mfcl_sweeps import backends, model
from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState
from mfcl_sweeps.expand import config_hash, make_run_id
from mfcl_sweeps.job.jobspec import Session, identity_env, write_session
from mfcl_sweeps.launch.driver import _outcome, make_request
from mfcl_sweeps.model import PlannedRun

APP_DIR = Path(__file__).parent / "apps" / "behave"
DONE_S = 240  # a scheduler may queue a job for a while on a busy test cluster


# -- the backends under test --------------------------------------------------------------------
@dataclass
class Case:
    name: str
    options: Callable[[Path, int], dict]  # hydra.launcher.* for a sweep under a tmp dir, N jobs at once
    service: Optional[str] = None  # tests/services.py name of the real service it needs
    marks: tuple = ()
    plan_options: dict = field(default_factory=dict)  # what makes a dry run repeatable (a fixed port)


def _ssh_options(tmp: Path, jobs: int) -> dict:
    known = SSH_HOSTS.write_known_hosts(tmp / "known_hosts")
    (tmp / "remote").mkdir(exist_ok=True)
    return {"hosts": [{"host": SSH_HOSTS.address, "port": SSH_HOSTS.ports[0], "user": SSH_HOSTS.user, "slots": jobs,
                       "workdir": str(tmp / "remote")}],
            "python": sys.executable, "identity_file": str(SSH_HOSTS.key), "known_hosts_file": str(known),
            "sync": "none", "project_dir": str(tmp), "kill_grace_s": 2.0}


CASES = [
    Case("local", lambda tmp, jobs: {"max_concurrent": jobs, "kill_grace_s": 2.0}),
    Case("torchrun", lambda tmp, jobs: {"max_concurrent": jobs, "nproc_per_node": 1, "pack_gpus": False,
                                        "kill_grace_s": 2.0},
         marks=(pytest.mark.slow,), plan_options={"master_port": 29555}),
    Case("slurm", lambda tmp, jobs: {"partition": "debug", "timeout_min": 5, "poll_min_s": 0.5, "poll_max_s": 2,
                               "name": "contract", "python": sys.executable},
         service="slurm", marks=(pytest.mark.slurm, pytest.mark.slow)),
    Case("pbs", lambda tmp, jobs: {"frontend": "slurm", "timeout_min": 5, "poll_min_s": 0.5, "poll_max_s": 2,
                             "job_name": "contract", "python": sys.executable},
         service="pbs", marks=(pytest.mark.slurm, pytest.mark.slow)),
    Case("ssh", _ssh_options, service="ssh", marks=(pytest.mark.ssh, pytest.mark.slow)),
    # the pool's placement, handles and states in front of a real child (several kinds: test_pool_services)
    Case("pool", lambda tmp, jobs: {"sources": [{"kind": "local", "name": "a", "slots": jobs, "gpus": 0,
                                                 "kill_grace_s": 2.0}]}),
]


def test_every_registered_backend_has_a_case() -> None:
    assert sorted(c.name for c in CASES) == sorted(backends.BACKENDS)


@pytest.fixture(params=[pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def case(request: Any) -> Case:
    if request.param.service:
        require_service(request.param.service)
    return request.param


# -- a session and requests, as the launcher makes them -----------------------------------------
def _app_task() -> Callable:
    spec = importlib.util.spec_from_file_location("mfcl_contract_behave_app", APP_DIR / "app.py")
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)  # job processes cannot import tests/apps
    return module.main.__wrapped__  # the task, without @hydra.main's command line


@dataclass
class Sweep:
    dir: Path
    side: Path
    session: Session
    session_path: str

    def requests(self, backend: str, *modes: tuple[str, dict]) -> list[JobRequest]:
        out = []
        for i, (mode, extra) in enumerate(modes):
            overrides = (f"mode={mode}", f"value={i}", *(f"{k}={v}" for k, v in extra.items()))
            run = PlannedRun(overrides=overrides, config_hash=config_hash(overrides), group="contract",
                             position=i, index=i, run_id=make_run_id(i, "contract", f"{mode}{i}"))
            req = make_request(run, [*overrides, f"side_dir={self.side}"], sweep_dir=str(self.dir),
                               session_path=self.session_path, backend=backend,
                               env_set=identity_env(run, "contract", str(self.dir)))
            req.spec.journal = False  # the driver's business, not the backend's
            out.append(req)
        return out


@pytest.fixture
def sweep(tmp_path: Path) -> Sweep:
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.singleton import Singleton
    from hydra.types import HydraContext, RunMode

    sweep_dir = tmp_path / "sweep"
    hydra = Hydra.create_main_hydra2(task_name="app", config_search_path=create_config_search_path(str(APP_DIR)))
    cfg = hydra.compose_config("config", [f"hydra.sweep.dir={sweep_dir}", f"side_dir={tmp_path / 'side'}"],
                               run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg))
    session = Session(task_function=_app_task(), hydra_context=context, singleton_state=Singleton.get_state(),
                      master_config=cfg, sweep_dir=str(sweep_dir))
    path = str(sweep_dir / ".mfcl" / "session-contract.pkl")
    (sweep_dir / ".mfcl").mkdir(parents=True)
    write_session(session, path)
    return Sweep(sweep_dir, tmp_path / "side", session, path)


def make_backend(case: Case, sweep: Sweep, jobs: int = 1, **extra: Any) -> Backend:
    cls = backends.get(case.name)
    return cls.from_options({**case.options(sweep.dir.parent, jobs), **extra}, session=sweep.session)


def submit_all(backend: Backend, requests: list[JobRequest]) -> list[JobHandle]:
    """As the driver loop does: ask for room first, write the job files, then plan and submit."""
    capacity = backend.capacity()
    assert capacity is None or capacity >= len(requests), capacity
    for req in requests:
        Path(req.job_path).parent.mkdir(parents=True, exist_ok=True)
        req.spec.write(req.job_path)
    return [h for sub in backend.plan(requests) for h in backend.submit(sub)]


def wait_done(backend: Backend, handles: list[JobHandle], timeout: float = DONE_S) -> dict[str, JobState]:
    done: dict[str, JobState] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(handles):
        missing = [h.key for h in handles if h.key not in done]
        assert time.monotonic() < deadline, f"not done after {timeout}s: {missing}"
        live = [h for h in handles if h.key not in done]
        done.update({k: s for k, s in backend.poll(live).items() if s.done})
        backend.wait(backend.poll_interval)
    return done


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DONE_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(0.1)
    return value


def started_pid(sweep: Sweep, req: JobRequest) -> int:
    """The pid the task itself wrote to the side dir (the behave app records it)."""
    import json

    path = sweep.side / f"{req.run.run_id}.json"
    return wait_for(lambda: path.exists() and json.loads(path.read_text() or "{}").get("pid"),
                    f"run {req.run.run_id} started")



def outcome(req: JobRequest, state: JobState) -> tuple[str, dict]:
    from mfcl_sweeps.job.worker import outcome as job_outcome

    ret = _outcome(req, state)[0]
    return job_outcome(ret)


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def children() -> set[int]:
    """This process's live children (a backend that starts something starts it below us)."""
    me = str(os.getpid())
    out = set()
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
        if fields[1].decode() == me and fields[0] != b"Z":
            out.add(int(name))
    return out


# -- the contract ---------------------------------------------------------------------------------
def test_plan_is_pure_and_deterministic(case: Case, sweep: Sweep) -> None:
    backend = make_backend(case, sweep, **case.plan_options)
    try:
        requests = sweep.requests(case.name, ("ok", {}), ("ok", {"seconds": 1}), ("raise", {}))
        before, kids = tree(sweep.dir.parent), children()
        first = [s.describe() for s in backend.plan(requests)]
        second = [s.describe() for s in backend.plan(requests)]
        assert first == second and first
        assert tree(sweep.dir.parent) == before  # no file written
        assert children() <= kids  # no process started
        assert all(r.run.run_id in "\n".join(first) for r in requests)
    finally:
        backend.close()


def test_submit_returns_one_handle_per_request_in_order(case: Case, sweep: Sweep) -> None:
    backend = make_backend(case, sweep, jobs=3)
    try:
        requests = sweep.requests(case.name, ("ok", {}), ("ok", {}), ("ok", {}))
        handles = submit_all(backend, requests)
        assert [h.request.run.run_id for h in handles] == [r.run.run_id for r in requests]
        assert len({h.key for h in handles}) == 3 and all(h.backend_job_id for h in handles)
        states = wait_done(backend, handles)
        for req, h in zip(requests, handles):
            assert outcome(req, states[h.key])[0] == model.COMPLETED, states[h.key]
    finally:
        backend.close()


def test_a_raising_task_polls_as_failed_with_exit_code_and_error_line(case: Case, sweep: Sweep) -> None:
    backend = make_backend(case, sweep)
    try:
        (req,) = sweep.requests(case.name, ("raise", {}))
        (handle,) = submit_all(backend, [req])
        state = wait_done(backend, [handle])[handle.key]
        assert state.exit_code not in (None, 0), state
        status, fields = outcome(req, state)
        assert status == model.FAILED and "boom on value 0" in fields["error"], fields
    finally:
        backend.close()


def test_a_killed_job_polls_as_failed(case: Case, sweep: Sweep) -> None:
    backend = make_backend(case, sweep)
    try:
        (req,) = sweep.requests(case.name, ("sleep", {"seconds": 120}))
        (handle,) = submit_all(backend, [req])
        os.kill(started_pid(sweep, req), signal.SIGKILL)  # every test service runs on this machine
        state = wait_done(backend, [handle])[handle.key]
        assert state.preempted or outcome(req, state)[0] == model.FAILED, state
        assert state.preempted or state.exit_code not in (None, 0) or state.error, state
    finally:
        backend.close()


def test_cancel_leaves_no_process_behind(case: Case, sweep: Sweep) -> None:
    backend = make_backend(case, sweep)
    escaped = None
    try:
        (req,) = sweep.requests(case.name, ("children", {"seconds": 120}))
        (handle,) = submit_all(backend, [req])
        task = started_pid(sweep, req)
        kids_file = sweep.side / f"{req.run.run_id}.children"
        in_group, escaped = map(int, wait_for(lambda: kids_file.exists() and kids_file.read_text().split(),
                                              "children started"))
        backend.cancel([handle])
        # the task and what it started in its own process group (a scheduler stops them after
        # cancel returns); a child that left the group with setsid is not every backend's business
        wait_for(lambda: not alive(task) and not alive(in_group), "task and child gone", timeout=60)
    finally:
        backend.close()
        if escaped is not None and alive(escaped):
            os.kill(escaped, signal.SIGKILL)


def test_capacity_is_honoured(case: Case, sweep: Sweep) -> None:
    backend = make_backend(case, sweep)
    try:
        capacity = backend.capacity()
        if capacity is None:  # a scheduler queues whatever it is given: nothing to exceed
            assert backend.queues_jobs
            return
        assert capacity == 1  # every case allows one job at a time
        handles = submit_all(backend, sweep.requests(case.name, ("sleep", {"seconds": 3})))
        assert backend.capacity() == 0
        wait_done(backend, handles)
        assert backend.capacity() == 1
    finally:
        backend.close()


def test_the_driver_journals_each_submissions_runs_in_one_append(case: Case, sweep: Sweep) -> None:
    from hydra.core.utils import JobStatus

    from mfcl_sweeps.launch.driver import run_jobs
    from mfcl_sweeps.state.manifest import SweepManifest

    backend = make_backend(case, sweep, jobs=3)
    requests = sweep.requests(case.name, ("ok", {}), ("ok", {}), ("ok", {}))
    for req in requests:
        Path(req.job_path).parent.mkdir(parents=True, exist_ok=True)
    sizes = [len(s.requests) for s in backend.plan(requests)]  # an array: one submission of 3
    manifest = SweepManifest(sweep.dir)
    appended: list[list[str]] = []
    real = manifest.store.append
    manifest.store.append = lambda ops, **kw: (appended.append([op["s"] for op in ops]), real(ops, **kw))[1]
    returns = run_jobs(backend, requests, manifest=manifest)
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 3
    first = model.PENDING if backend.queues_jobs else model.RUNNING
    assert appended[:len(sizes)] == [[first] * n for n in sizes], appended
