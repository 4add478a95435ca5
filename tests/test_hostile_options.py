"""The hostile-input corpus, options part: out-of-range `hydra.launcher.*` options of every mfcl
launcher and `hydra.sweeper.*` options the spec does not read. Each is refused with one line
naming the key, in bounded time (a hang guard here; bench/bench_hostile_input.py measures it), before anything is written (the file corpus is
tests/test_hostile_input.py)."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apprun import APPS

from mfcl_sweeps import config
from mfcl_sweeps.errors import MfclError, OptionError
from mfcl_sweeps.options import parse_options

CONFS = {"mfcl_local": config.LocalLauncherConf, "mfcl_torchrun": config.TorchrunLauncherConf,
         "mfcl_slurm": config.SlurmLauncherConf, "mfcl_pbs": config.PbsLauncherConf,
         "mfcl_ssh": config.SshLauncherConf}
NEEDS = {"mfcl_ssh": {"hosts": ["localhost"]}, "mfcl_pbs": {"job_name": "app"}, "mfcl_slurm": {"name": "app"}}
COMMON = [("retries", -3), ("retry_backoff_s", -1), ("launch_delay", -0.5), ("progress", "loud"),
          ("output", "everything"), ("retries", "many")]
OWN = {
    "mfcl_local": [("timeout", -5), ("timeout", 0), ("idle_timeout", -1), ("start_method", "bogus"),
                   ("max_concurrent", -1), ("max_concurrent", 0), ("gpus_per_job", -2), ("kill_grace_s", -1)],
    "mfcl_torchrun": [("nnodes", 0), ("max_restarts", -1), ("monitor_interval", 0), ("master_port", 70000),
                      ("max_concurrent", -1), ("timeout", -5), ("rdzv_endpoint", "host:99999"),
                      ("connect_timeout_s", 0)],
    "mfcl_slurm": [("timeout_min", -5), ("cpus_per_task", 0), ("nodes", 0), ("mem_gb", -1), ("runs_per_gpu", 0),
                   ("pack_minutes", 0), ("runs_per_task", 0), ("array_parallelism", 0), ("rdzv_port", 0),
                   ("max_num_timeout", -1), ("signal_delay_s", -1)],
    "mfcl_pbs": [("timeout_min", 0), ("priority", 5000), ("nodes", -1), ("ncpus", 0), ("dialect", "lsf"),
                 ("subjob_limit", "none"), ("max_array_size", 0), ("queue", "a b"), ("runs_per_gpu", -1),
                 ("pack_minutes", -5), ("pack_minutes", "soon")],
    "mfcl_ssh": [("timeout", -5), ("strategy", "bogus"), ("max_failure_rate", 2), ("max_consecutive_failures", 0),
                 ("dead_after_s", 0), ("sync", "ftp"), ("kill_grace_s", -1), ("ssh_options", ["-oEvil"])],
}
CASES = [(launcher, key, value) for launcher in CONFS for key, value in [*COMMON, *OWN[launcher]]]


@pytest.mark.parametrize("launcher,key,value", CASES, ids=[f"{c[0]}-{c[1]}={c[2]}" for c in CASES])
def test_a_launcher_option_out_of_range_is_one_line(launcher, key, value):
    t0 = time.process_time()
    with pytest.raises(OptionError) as err:
        parse_options(CONFS[launcher], {**NEEDS.get(launcher, {}), key: value}, launcher)
    line = str(err.value)
    assert line.startswith(f"hydra.launcher.{key}=") and "\n" not in line and "; " in line, line
    assert time.process_time() - t0 < 30.0  # a hang guard; bench/bench_hostile_input.py measures the speed


def check_sweeper_options(raw):
    """The check SweepCore.setup runs on hydra.sweeper.* (the options declared in mfcl_sweeps.config)."""
    parse_options(config.MfclSweeperConf, raw, "the mfcl sweeper", group="hydra.sweeper")


SWEEPER = [("claim_timeout", -5, "must be > 0"), ("claim_timeout", "soon", "a number"),
           ("max_batch_size", 0, ">= 1"), ("max_batch_size", -2, ">= 1"), ("max_batch_size", 1.5, "an integer"),
           ("cluster", "a/b", "plain name"), ("cluster", "../x", "plain name"), ("store", "bogus://x", "unknown store"),
           ("store", "postgresql://u@h:99999/db", "store"), ("resume", "sometimes", "must be one of"),
           ("name", "a/b", "plain name"), ("clam", True, "did you mean claim?")]


@pytest.mark.parametrize("key,value,words", SWEEPER, ids=[f"{k}={v}" for k, v, _ in SWEEPER])
def test_a_sweeper_option_out_of_range_is_one_line(key, value, words):
    with pytest.raises(MfclError) as err:
        check_sweeper_options({key: value})
    line = str(err.value)
    assert line.startswith(f"hydra.sweeper.{key}=") and "\n" not in line and words in line, line


def test_good_sweeper_options_pass():
    check_sweeper_options({"claim_timeout": 0.5, "max_batch_size": 3, "cluster": "gpu-a.1", "store": "file",
                           "name": "ok-name_1.2+3", "resume": "rerun_failed_only"})


def refused_by_a_real_sweep(tmp_path: Path, launcher: str, option: str, *more: str) -> None:
    """A real `--multirun` of a test app: one line naming the key (plus Hydra's own hint line,
    as for every error Hydra reports), little CPU, no sweep dir, no job run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, str(APPS / "behave" / "app.py"), "--multirun",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"side_dir={tmp_path / 'side'}",
                           "hydra/sweeper=mfcl", f"hydra/launcher={launcher}", *more, option, "value=1,2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(option.split("=")[0] + "="), lines[0]
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 30.0  # a hang guard
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "side").exists()


def test_a_real_sweep_refuses_a_bad_launcher_option(tmp_path):
    refused_by_a_real_sweep(tmp_path, "mfcl_local", "hydra.launcher.max_concurrent=-1")


REAL = [("mfcl_local", "hydra.launcher.timeout=-5"), ("mfcl_local", "hydra.launcher.start_method=bogus"),
        ("mfcl_local", "hydra.launcher.retries=-3"), ("mfcl_local", "hydra.sweeper.claim_timeout=-5"),
        ("mfcl_local", "hydra.sweeper.max_batch_size=-2"), ("mfcl_local", "hydra.sweeper.store=bogus://x"),
        ("mfcl_local", "hydra.sweeper.resume=sometimes"),
        ("mfcl_torchrun", "hydra.launcher.nnodes=0"), ("mfcl_slurm", "hydra.launcher.timeout_min=-5"),
        ("mfcl_pbs", "hydra.launcher.ncpus=0"), ("mfcl_ssh", "hydra.launcher.strategy=bogus", "hydra.launcher.hosts=[localhost]")]


@pytest.mark.slow
@pytest.mark.parametrize("case", REAL, ids=[c[1] for c in REAL])
def test_real_sweeps_refuse_bad_options(tmp_path, case):
    refused_by_a_real_sweep(tmp_path, *case)
