"""mfcl_pbs planning, pure: rendered job scripts and qsub commands against golden files (both
dialects, GPUs or not, arrays with a parallelism limit, per-group resources, a user template, the
slurm-wlm-torque front end), option validation, and parsing of scheduler output.

A golden file that no longer matches fails with a diff; `MFCL_UPDATE_GOLDEN=1 pytest
tests/test_pbs_render.py` rewrites them (review the change with `git diff tests/golden/pbs`)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import goldenfiles
import pytest
from slurm_doubles import FakeOutputQuery

from mfcl_sweeps.backends.base import JobRequest
from mfcl_sweeps.backends.pbs.backend import PbsBackend, array_range, pbs_mem, pbs_options, walltime
from mfcl_sweeps.backends.pbs.frontends import (
    PbsError,
    PbsFrontend,
    SlurmTorqueFrontend,
    detect_frontend,
    parse_qstat_full,
    pbs_id,
    pbs_task_state,
    slurm_id,
    unknown_ids,
)
from mfcl_sweeps.errors import OptionError
from mfcl_sweeps.job.jobspec import JobSpec, run_to_dict
from mfcl_sweeps.model import PlannedRun, RunResources

GOLDEN = Path(__file__).parent / "golden" / "pbs"
SWEEP = "/sweeps/demo"


def check_golden(name: str, text: str) -> None:
    goldenfiles.check_golden("pbs", name, text, __file__)


def requests(n: int, resources: dict[int, RunResources] | None = None) -> list:
    out = []
    for i in range(n):
        run = PlannedRun(overrides=(f"lr=0.{i + 1}",), config_hash=f"hash{i}", combo=f"lr-0.{i + 1}",
                         resources=(resources or {}).get(i, RunResources()), index=i,
                         run_id=f"{i:05d}_default_lr-0.{i + 1}")
        spec = JobSpec(overrides=list(run.overrides), index=i, run=run_to_dict(run), sweep_dir=SWEEP,
                       result_path=f"{SWEEP}/.mfcl/results/{run.run_id}.1.pkl", session_path=f"{SWEEP}/.mfcl/session-1.pkl")
        out.append(JobRequest(run=run, spec=spec, job_path=f"{SWEEP}/.mfcl/jobs/{run.run_id}.1.json",
                              log_path=f"{SWEEP}/.mfcl/logs/{run.run_id}.log"))
    return out


def plan_text(options: dict, n: int, frontend=None, resources=None) -> str:
    opts = pbs_options({"python": "/opt/venv/bin/python", "job_name": "train", **options})
    backend = PbsBackend(opts, sweep_dir=SWEEP, frontend=frontend or PbsFrontend(opts.dialect),
                         workdir="/home/me/project")
    return "\n\n".join(s.describe() for s in backend.plan(requests(n, resources))) + "\n"


CASES = {
    "pbspro_array_gpu.txt": ({"ncpus": 8, "ngpus": 2, "mem_gb": 32, "timeout_min": 90, "array_parallelism": 2,
                              "queue": "gpu", "account": "proj42", "priority": 10,
                              "extra_directives": ["-l place=scatter"],
                              "setup": ["module load cuda/12.1", "source /opt/venv/bin/activate"]}, 4),
    "pbspro_single_cpu.txt": ({"mem_gb": 0.5, "timeout_min": 5, "join_output": False}, 1),
    "pbspro_max_run_subjobs.txt": ({"array_parallelism": 2, "subjob_limit": "max_run_subjobs"}, 3),
    "torque_array_gpu.txt": ({"dialect": "torque", "nodes": 2, "ncpus": 4, "ngpus": 1, "mem_gb": 8,
                              "array_parallelism": 2, "queue": "batch"}, 3),
    "torque_cpu.txt": ({"dialect": "torque", "join_output": False}, 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_scripts_match_golden(name: str) -> None:
    options, n = CASES[name]
    check_golden(name, plan_text(options, n))


def test_slurm_torque_front_end_script_matches_golden() -> None:
    check_golden("slurm_frontend_array.txt", plan_text({"array_parallelism": 1}, 2, frontend=SlurmTorqueFrontend("pbspro")))


def test_runs_with_different_resources_go_to_different_arrays() -> None:
    res = {1: RunResources(gpus_per_node=1, mem_gb=16), 3: RunResources(gpus_per_node=1, mem_gb=16),
           2: RunResources(timeout_min=240)}
    text = plan_text({}, 4, resources=res)
    check_golden("pbspro_per_group_resources.txt", text)
    assert text.count("$ qsub") == 3
    opts = pbs_options({"python": "/p"})
    plan = PbsBackend(opts, sweep_dir=SWEEP, frontend=PbsFrontend("pbspro")).plan(requests(4, res))
    assert [[r.run.index for r in s.requests] for s in plan] == [[0], [1, 3], [2]]


def test_user_template_overrides_ours(tmp_path: Path) -> None:
    template = GOLDEN / "user_template.sh.j2"
    check_golden("user_template.txt", plan_text({"template": str(template), "array_parallelism": 2}, 3))


def test_user_template_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh.j2"
    bad.write_text("#!/bin/bash\n{{ no_such_variable }}\n")
    with pytest.raises(PbsError, match="hydra.launcher.template: .*bad.sh.j2.*no_such_variable"):
        plan_text({"template": str(bad)}, 2)


def test_max_array_size_splits_arrays() -> None:
    text = plan_text({"max_array_size": 2}, 5)
    assert text.count("$ qsub") == 3
    assert "-J 0-1 " in text and text.count("-J 0-1 ") == 2 and "exec /opt/venv/bin/python -m mfcl_sweeps.worker " \
        "/sweeps/demo/.mfcl/session-1.pkl /sweeps/demo/.mfcl/jobs/00004_default_lr-0.5.1.json" in text


def test_rendered_array_script_is_valid_bash_and_picks_its_task(tmp_path: Path) -> None:
    """Run the array preamble of a real rendered script under bash with each index variable."""
    opts = pbs_options({"python": "/bin/echo", "job_name": "t"})
    reqs = requests(3)
    for r in reqs:
        r.log_path = str(tmp_path / f"{r.run.run_id}.log")
    sub = PbsBackend(opts, sweep_dir=str(tmp_path), frontend=SlurmTorqueFrontend("pbspro"), workdir=str(tmp_path)).plan(reqs)[0]
    script = tmp_path / "job.sh"
    script.write_text(sub.script)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for var, index in (("PBS_ARRAY_INDEX", 0), ("PBS_ARRAYID", 1), ("SLURM_ARRAY_TASK_ID", 2)):
        env = {"PATH": os.environ["PATH"], var: str(index)}
        assert subprocess.run(["bash", str(script)], env=env).returncode == 0
        logged = Path(reqs[index].log_path).read_text()
        assert "--index-env PBS_ARRAY_INDEX,PBS_ARRAYID,SLURM_ARRAY_TASK_ID" in logged
    none = subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert none.returncode == 2 and "none of PBS_ARRAY_INDEX, PBS_ARRAYID, SLURM_ARRAY_TASK_ID is set" in none.stderr


# -- small pure pieces ---------------------------------------------------------------------------
def test_units() -> None:
    assert walltime(90) == "01:30:00" and walltime(0.5) == "00:00:30" and walltime(61.01) == "01:01:01"
    assert pbs_mem(16) == "16gb" and pbs_mem(0.5) == "512mb" and pbs_mem(1.25) == "1280mb"
    opts = pbs_options({"array_parallelism": 4})
    assert array_range(opts, 10) == "0-9%4" and array_range(opts, 3) == "0-2" and array_range(opts, 1) is None
    assert array_range(pbs_options({"array_parallelism": 4, "subjob_limit": "max_run_subjobs"}), 10) == "0-9"


@pytest.mark.parametrize("options, message", [
    ({"dialect": "sge"}, "hydra.launcher.dialect='sge': must be one of pbspro, torque"),
    ({"job_name": "my job"}, "hydra.launcher.job_name='my job': a PBS job name starts with a letter"),
    ({"job_name": "1st"}, "hydra.launcher.job_name='1st'"),
    ({"priority": 5000}, "hydra.launcher.priority=5000: must be in -1024..1023"),
    ({"ncpus": 0}, "hydra.launcher.ncpus=0: must be >= 1"),
    ({"ncpus": "four"}, "hydra.launcher.ncpus='four': must be an integer"),
    ({"nodes": 1.5}, "hydra.launcher.nodes=1.5: must be an integer"),
    ({"mem_gb": -1}, "hydra.launcher.mem_gb=-1: must be > 0"),
    ({"array_parallelism": 0}, "hydra.launcher.array_parallelism=0"),
    ({"queue": "a b"}, "hydra.launcher.queue='a b': must be a plain name"),
    ({"template": "/no/such.j2"}, "hydra.launcher.template='/no/such.j2': no such file"),
    ({"walltime": "1:00:00"}, "hydra.launcher.walltime='1:00:00': not an option of mfcl_pbs"),
])
def test_bad_options_fail_with_one_line_naming_the_key(options: dict, message: str) -> None:
    with pytest.raises(OptionError) as err:
        pbs_options(options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_compat_refuses_paths_its_qsub_cannot_pass() -> None:
    with pytest.raises(PbsError, match="hydra.launcher.output_dir='/tmp/my sweep/.mfcl/pbs'"):
        SlurmTorqueFrontend("pbspro").output_path("/tmp/my sweep/.mfcl/pbs", "x", True)


# Hand-written samples in the documented `qstat -f` formats: no real PBS server runs here.
PBSPRO_QSTAT_F_SAMPLE = """\
Job Id: 4242[].pbs01
    Job_Name = train
    job_state = B
    array = True
    array_indices_submitted = 0-2

Job Id: 4242[0].pbs01
    Job_Name = train
    job_state = X
    Exit_status = 0

Job Id: 4242[1].pbs01
    Job_Name = train
    job_state = R
    comment = Job run at Mon Jan 01 at 10:00 on (node1:ncpus=1)
\tand more text

Job Id: 4242[2].pbs01
    job_state = F
    Exit_status = 271
"""
TORQUE_QSTAT_F_SAMPLE = """\
Job Id: 77[0].torque-head.cluster
    Job_Name = train-0
    job_state = C
    exit_status = 1
Job Id: 77[1].torque-head.cluster
    job_state = Q
"""


def test_parse_qstat_full_on_hand_written_samples() -> None:
    jobs = parse_qstat_full(PBSPRO_QSTAT_F_SAMPLE)
    assert set(jobs) == {"4242[].pbs01", "4242[0].pbs01", "4242[1].pbs01", "4242[2].pbs01"}
    assert jobs["4242[1].pbs01"]["comment"].endswith("and more text")
    s0, s1, s2 = (pbs_task_state(jobs[f"4242[{i}].pbs01"]) for i in range(3))
    assert (s0.done, s0.exit_code, s0.error) == (True, 0, None)
    assert (s1.done, s1.running) == (False, True)
    assert s2.done and s2.exit_code == -15 and "SIGTERM" in s2.error and "271" in s2.error
    torque = parse_qstat_full(TORQUE_QSTAT_F_SAMPLE)
    t0, t1 = (pbs_task_state(torque[f"77[{i}].torque-head.cluster"]) for i in range(2))
    assert (t0.done, t0.exit_code, t0.error) == (True, 1, None) and not t1.done


def test_task_ids_and_unknown_job_messages() -> None:
    fe = PbsFrontend("pbspro")
    assert fe.task_id("4242[].pbs01", 3) == "4242[3].pbs01" and fe.task_id("99.pbs01", None) == "99.pbs01"
    assert fe.array_id("4242[3].pbs01") == "4242[].pbs01" and fe.key("4242[3].pbs01.example.org") == ("4242", 3)
    assert fe.qstat_argv(["1[].s"]) == ["qstat", "-f", "-t", "-x", "1[].s"]
    assert PbsFrontend("torque").qstat_argv(["1[].s"]) == ["qstat", "-f", "-t", "1[].s"]
    assert unknown_ids("qstat: Unknown Job Id 55[].pbs01\nqstat: 56.pbs01 Job has finished, use -x or -H") == \
        ["55[].pbs01", "56.pbs01"]
    assert slurm_id("31[2]") == "31_2" and slurm_id("31") == "31"
    assert SlurmTorqueFrontend("torque").task_id("31", 2) == "31[2]"


def test_compat_poll_reads_slurm_in_pbs_ids() -> None:
    fe = SlurmTorqueFrontend("pbspro")
    fe.query = FakeOutputQuery(
        "1_0|COMPLETED|0:0\n1_1|FAILED|1:0\n1_2|CANCELLED by 0|0:9\n1|RUNNING|0:0\n2|FAILED|0:9\n3|TIMEOUT|0:15\n"
        "4|RUNNING|0:0\n", "1_3|PENDING\n4|RUNNING\n", wording=fe.query.wording)
    states = fe.poll(["1[0]", "1[1]", "1[2]", "1[3]", "2", "3", "4"])
    assert states["1[0]"].done and states["1[0]"].error is None
    assert states["1[1]"].exit_code == 1 and states["1[1]"].error is None  # the worker's own result says why
    assert states["1[2]"].error == "PBS job 1[2] deleted (qdel/scancel) (CANCELLED)"
    assert not states["1[3]"].done  # pending: only squeue knows it
    assert states["2"].exit_code == -9 and states["2"].error == "PBS job 2 was killed by SIGKILL"
    assert states["3"].error == "PBS job 3 walltime exceeded (TIMEOUT)"
    assert states["4"].running and not states["4"].done  # a job without an array, by its bare id
    assert pbs_id("31_2") == "31[2]" and pbs_id("31") == "31"


def test_frontend_detection_reads_which_qsub_is_installed() -> None:
    import shutil

    qsub = shutil.which("qsub")
    expected = "slurm" if qsub and b"sbatch" in Path(qsub).read_bytes() else "pbs"
    assert detect_frontend("auto") == expected
    assert detect_frontend("pbs") == "pbs"
