"""mfcl_local on real processes: isolation, timeouts, retries, completion order, quoting, GPU slices,
and Hydra's own launcher test suites."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from apprun import manifest_runs, run_app, side_lines, side_records
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

MFCL = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.progress=log"]


def test_discovery() -> None:
    names = [p.__name__ for p in Plugins.instance().discover(Launcher)]
    assert "MfclLocalLauncher" in names


@pytest.mark.parametrize("launcher_name, overrides", [("mfcl_local", [])])
class TestMfclLocalLauncherWithBasicSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("mfcl_local", ["hydra/sweeper=mfcl"])])
class TestMfclLocalLauncherWithMfclSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({}, ["-m", "hydra/launcher=mfcl_local", "hydra/sweeper=mfcl"])])
class TestMfclLocalIntegration(IntegrationTestSuite):
    pass


def test_crashes_fail_only_their_run(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=ok,raise,exit,segfault,sigkill", "value=1,2")
    assert proc.returncode != 0, proc.stderr
    runs = manifest_runs(tmp_path / "sweep")
    assert len(runs) == 10
    by_mode = {}
    for r in runs.values():
        mode = next(o.split("=", 1)[1] for o in r["overrides"] if o.startswith("mode="))
        by_mode.setdefault(mode, []).append(r)
    assert all(r["status"] == "completed" for r in by_mode["ok"])
    for mode in ("raise", "exit", "segfault", "sigkill"):
        assert all(r["status"] == "failed" for r in by_mode[mode]), (mode, by_mode[mode])
    assert all("boom on value" in r["error"] for r in by_mode["raise"])
    assert all(r["exit_code"] == 3 for r in by_mode["exit"])
    assert all("SIGSEGV" in r["error"] for r in by_mode["segfault"])
    assert all("SIGKILL" in r["error"] for r in by_mode["sigkill"])
    # the last lines of each failed run's log: the traceback, or the stack faulthandler dumped
    for r in by_mode["raise"]:
        assert 'raise ValueError(f"boom on value {cfg.value}")' in r["stderr_tail"]
        assert r["stderr_tail"].splitlines()[-1] == f"mfcl-sweeps: run {r['run_id']} failed: {r['error']}"
    assert all("Fatal Python error: Segmentation fault" in r["stderr_tail"] for r in by_mode["segfault"])
    assert all(r["stderr_tail"] is None for r in by_mode["ok"])
    # the driver names the failed runs in its one-line error
    failed_ids = [r["run_id"] for m in ("raise", "exit", "segfault", "sigkill") for r in by_mode[m]]
    assert "8 run(s) failed" in proc.stderr and failed_ids[0] in proc.stderr


def test_fail_on_error_false_exits_zero(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=ok,raise", "hydra.sweeper.fail_on_error=false")
    assert proc.returncode == 0, proc.stderr
    statuses = sorted(r["status"] for r in manifest_runs(tmp_path / "sweep").values())
    assert statuses == ["completed", "failed"]


def test_timeout_and_idle_timeout(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=sleep,silent", "seconds=30",
                   "hydra.launcher.timeout=4", "hydra.launcher.idle_timeout=2", "hydra.sweeper.fail_on_error=false")
    assert proc.returncode == 0, proc.stderr
    errors = {next(o for o in r["overrides"] if o.startswith("mode=")): r["error"]
              for r in manifest_runs(tmp_path / "sweep").values()}
    # 'sleep' prints nothing either, so idle_timeout (2 s) ends both before timeout (4 s)
    assert "idle_timeout" in errors["mode=silent"]
    assert "idle_timeout" in errors["mode=sleep"]
    proc = run_app("behave", tmp_path, *MFCL, "mode=sleep", "seconds=30", "hydra.launcher.timeout=2",
                   "hydra.sweeper.fail_on_error=false", sweep_dir=tmp_path / "sweep2")
    (run,) = manifest_runs(tmp_path / "sweep2").values()
    assert run["status"] == "failed" and "timed out after 2s" in run["error"]


def test_retries_rerun_a_failed_attempt(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=fail_once", "value=1,2", "hydra.launcher.retries=1",
                   "hydra.launcher.retry_backoff_s=0.1")
    assert proc.returncode == 0, proc.stderr
    runs = manifest_runs(tmp_path / "sweep")
    assert [r["status"] for r in runs.values()] == ["completed", "completed"]
    assert all(r["attempts"] == 2 for r in runs.values())
    assert sorted(side_lines(tmp_path, "starts.txt")) == sorted(list(runs) * 2)


def test_results_stream_in_completion_order(tmp_path: Path) -> None:
    # run 0 sleeps 3 s; runs 1.. finish at once and must not wait for it
    proc = run_app("behave", tmp_path, *MFCL, "mode=sleep", "seconds=3,0,0.01,0.02", "hydra.launcher.max_concurrent=2")
    assert proc.returncode == 0, proc.stderr
    runs = sorted(manifest_runs(tmp_path / "sweep").values(), key=lambda r: r["index"])
    assert runs[0]["end_time"] > max(r["end_time"] for r in runs[1:])
    # JobReturns still come back in input order: job dirs follow indices
    assert [Path(r["job_dir"]).name for r in runs] == ["0", "1", "2", "3"]


INJECTION = "a; $(touch {x}) ' \" \\ `touch {x}` \n end"


def test_values_reach_the_task_byte_for_byte(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = INJECTION.format(x=marker)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps({"grid": {"value": [value, "plain"]}}))
    for start in ("fork", "spawn"):
        proc = run_app("behave", tmp_path, *MFCL, f"hydra.sweeper.sweep_file={sweep_file}",
                       f"hydra.launcher.start_method={start}", sweep_dir=tmp_path / start)
        assert proc.returncode == 0, proc.stderr
        seen = sorted(r["value"] for r in side_records(tmp_path).values())
        assert value in seen
        assert not marker.exists()


def test_gpu_slices_are_disjoint(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=sleep", "seconds=1", "value=1,2,3,4",
                   "hydra.launcher.gpus=[0,1,2,3]", "hydra.launcher.gpus_per_job=2")
    assert proc.returncode == 0, proc.stderr
    recs = list(side_records(tmp_path).values())
    slices = [r["env"]["CUDA_VISIBLE_DEVICES"] for r in recs]
    assert sorted(set(slices)) == ["0,1", "2,3"]
    # at most two jobs at a time hold GPUs: overlapping jobs never share a slice
    recs.sort(key=lambda r: r["t"])
    for a, b in zip(recs, recs[1:]):
        if b["t"] - a["t"] < 0.9:
            assert a["env"]["CUDA_VISIBLE_DEVICES"] != b["env"]["CUDA_VISIBLE_DEVICES"]


def test_identity_env_and_resolver_in_every_job(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "value=1,2", "hydra.sweeper.name=ident",
                   "hydra.sweep.subdir=${mfcl:run_id}", env={"MFCL_STORAGE_ROOT": str(tmp_path / "store")})
    assert proc.returncode == 0, proc.stderr
    sweep_dir = tmp_path / "store" / "ident"
    runs = manifest_runs(sweep_dir)
    for run_id, rec in side_records(tmp_path).items():
        env = rec["env"]
        assert env["MFCL_SWEEP_ID"] == "ident"
        assert env["MFCL_SWEEP_DIR"] == str(sweep_dir)
        assert env["MFCL_SWEEP_INDEX"] == str(runs[run_id]["index"])
        assert env["MFCL_SWEEP_CONFIG_HASH"] == runs[run_id]["config_hash"]
        assert env["MFCL_SWEEP_RUN_DIR"] == str(sweep_dir / run_id)
        assert (sweep_dir / run_id / ".hydra" / "overrides.yaml").exists()


def test_spawned_jobs_report_their_real_exit(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=segfault,exit", "hydra.launcher.start_method=spawn",
                   "hydra.sweeper.fail_on_error=false")
    assert proc.returncode == 0, proc.stderr
    runs = {next(o for o in r["overrides"] if o.startswith("mode=")): r for r in manifest_runs(tmp_path / "sweep").values()}
    assert runs["mode=exit"]["exit_code"] == 3
    assert "SIGSEGV" in runs["mode=segfault"]["error"]


def test_cancel_stops_a_running_sweep_and_resume_reruns_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from apprun import APPS

    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"hydra.sweep.dir={sweep_dir}",
           f"side_dir={tmp_path / 'side'}", *MFCL, "mode=sleep", "seconds=60", "hydra.sweeper.fail_on_error=false"]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not list((tmp_path / "side").glob("*.json")):
        assert time.time() < deadline and driver.poll() is None
        time.sleep(0.2)
    (rec,) = side_records(tmp_path).values()
    out = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "cancel", str(sweep_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    driver.wait(timeout=60)
    status = json.loads(subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "status", str(sweep_dir), "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    assert status["counts"]["cancelled"] == 1, status
    assert not os.path.exists(f"/proc/{rec['pid']}")  # the job's process is gone, not orphaned


def test_jobs_sharing_config_groups_get_hydras_own_configs(tmp_path: Path) -> None:
    """Forked jobs finish their config from a template composed once per choice of groups
    (mfcl_sweeps.job.config_templates); every file Hydra writes for a job matches Hydra's BasicLauncher."""
    import subprocess
    import sys

    import yaml

    app = Path(__file__).parent / "apps" / "groups" / "app.py"
    sweep = ["hydra/sweeper=mfcl", "model=mlp,cnn", "seed=1,2,3", "+x=a", "train.epochs=4",
             "hydra.sweep.subdir=${hydra.job.override_dirname}", "hydra.verbose=mfcl_sweeps.job.config_templates"]
    dirs = {}
    for launcher in ("basic", "mfcl_local"):
        dirs[launcher] = tmp_path / launcher
        proc = subprocess.run([sys.executable, str(app), "--multirun", f"hydra.sweep.dir={dirs[launcher]}",
                               f"hydra/launcher={launcher}", *sweep], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("composed a config template") == 2, proc.stdout

    def job_files(root: Path) -> dict:
        out = {}
        for job in sorted(p for p in root.iterdir() if (p / ".hydra").is_dir()):
            hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
            for key in ("launcher", "sweep", "overrides"):
                hydra_cfg.pop(key)
            hydra_cfg["runtime"].pop("output_dir")
            hydra_cfg["runtime"]["choices"].pop("hydra/launcher")
            hydra_cfg["job"].pop("env_set")  # identity variables: run ids differ by launcher
            out[job.name] = {"config": (job / ".hydra" / "config.yaml").read_text(),
                             "overrides": (job / ".hydra" / "overrides.yaml").read_text(), "hydra": hydra_cfg}
        return out

    basic, mine = job_files(dirs["basic"]), job_files(dirs["mfcl_local"])
    assert len(basic) == 6 and "+x=a,model=cnn,seed=2,train.epochs=4" in basic
    assert mine == basic


def test_the_cuda_driver_library_is_detected_in_the_process_maps() -> None:
    from mfcl_sweeps.backends.local import cuda_driver_loaded

    maps = ("7f0c1a000000-7f0c1a022000 r--p 00000000 08:01 1234  /usr/lib/x86_64-linux-gnu/libc.so.6\n"
            "7f0c1b000000-7f0c1b100000 r-xp 00000000 08:01 99  /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n")
    assert cuda_driver_loaded(maps)
    assert not cuda_driver_loaded(maps.splitlines()[0] + "\n7f0c1c000000-7f0c1c001000 rw-p 00000000 00:00 0 \n")
    assert not cuda_driver_loaded()  # this test process has loaded no CUDA driver


@pytest.mark.parametrize("cuda_at_import", [False, True])
def test_jobs_start_fresh_when_the_app_initializes_cuda_at_import(tmp_path: Path, cuda_at_import: bool) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if cuda_at_import:  # an empty library will do as the stand-in: only its name is looked at
        fake = tmp_path / "libcuda.so.1"
        (tmp_path / "empty.c").write_text("int mfcl_fake_cuda;\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(fake), str(tmp_path / "empty.c")],
                       check=True)
        env["FAKE_LIBCUDA"] = str(fake)
    app = Path(__file__).parent / "apps" / "cuda_at_import" / "app.py"
    proc = subprocess.run([sys.executable, str(app), "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           f"+side_dir={tmp_path / 'side'}", "+x=1,2", *MFCL], capture_output=True, text=True,
                          env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    cmdlines = [(tmp_path / "side" / f"{x}.txt").read_text() for x in (1, 2)]
    fresh = ["-m mfcl_sweeps.worker" in c for c in cmdlines]
    assert fresh == [cuda_at_import] * 2, cmdlines
    assert ("jobs start as fresh interpreters" in proc.stdout + proc.stderr) == cuda_at_import


def test_forking_a_job_leaves_the_drivers_garbage_collectable(tmp_path: Path) -> None:
    """The driver's heap is frozen in the job's process, not in the driver: a freeze in the driver
    before each fork kept every run's uncollected garbage for good (memory grew with the runs)."""
    import gc
    import os
    import weakref

    from mfcl_sweeps.backends.local import LocalBackend, LocalOptions
    from mfcl_sweeps.launch.driver import make_request
    from mfcl_sweeps.model import PlannedRun

    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage
    collected = weakref.ref(garbage)
    del garbage  # unreachable, waiting for a collection as a finished run's configs do
    frozen = gc.get_freeze_count()
    run = PlannedRun(overrides=(), config_hash="0" * 16, run_id="00000_default")
    request = make_request(run, [], sweep_dir=str(tmp_path), session_path="")
    os.makedirs(os.path.dirname(request.log_path))
    pid = LocalBackend(LocalOptions(), session=None)._start(request, {}, ["true"], None)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert gc.get_freeze_count() == frozen
    gc.collect()
    assert collected() is None
