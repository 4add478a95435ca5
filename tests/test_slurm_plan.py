"""mfcl_slurm planning, pure: generated sbatch scripts and commands against golden files (one
array with a parallelism limit and every hydra-submitit option, per-group resources, torchrun
allocations, arrays split under MaxArraySize, detach with its aggregation job), option
validation, and parsing of sacct/squeue output.

A golden file that no longer matches fails with a diff; `MFCL_UPDATE_GOLDEN=1 pytest
tests/test_slurm_plan.py` rewrites them (review the change with `git diff tests/golden/slurm`)."""
from __future__ import annotations

from pathlib import Path

import goldenfiles
import pytest
from slurm_doubles import FakeOutputQuery

from mfcl_sweeps.backends.base import JobRequest
from mfcl_sweeps.backends.sacct import ended, expand_ids, parse_sacct, parse_squeue
from mfcl_sweeps.backends.slurm.backend import (
    SlurmBackend,
    array_resources,
    signal_delay,
    slurm_options,
)
from mfcl_sweeps.backends.slurm.task import rank_env, rendezvous_port, restarted
from mfcl_sweeps.errors import OptionError
from mfcl_sweeps.job.jobspec import JobSpec, run_to_dict
from mfcl_sweeps.model import PlannedRun, RunResources

SWEEP = "/sweeps/demo"


def check_golden(name: str, text: str) -> None:
    goldenfiles.check_golden("slurm", name, text, __file__)


def requests(n: int, resources: dict[int, RunResources] | None = None) -> list[JobRequest]:
    out = []
    for i in range(n):
        run = PlannedRun(overrides=(f"lr=0.{i + 1}",), config_hash=f"hash{i}", combo=f"lr-0.{i + 1}",
                         resources=(resources or {}).get(i, RunResources()), index=i,
                         run_id=f"{i:05d}_default_lr-0.{i + 1}")
        spec = JobSpec(overrides=list(run.overrides), index=i, run=run_to_dict(run), sweep_dir=SWEEP,
                       result_path=f"{SWEEP}/.mfcl/results/{run.run_id}.1.pkl",
                       session_path=f"{SWEEP}/.mfcl/session-1.pkl")
        out.append(JobRequest(run=run, spec=spec, job_path=f"{SWEEP}/.mfcl/jobs/{run.run_id}.1.json",
                              log_path=f"{SWEEP}/logs/runs/{run.run_id}.log"))
    return out


def backend(options: dict, *, detach: bool = False, max_array_size: int = 1001) -> SlurmBackend:
    opts = slurm_options({"python": "/opt/venv/bin/python", "name": "train", **options})
    return SlurmBackend(opts, sweep_dir=SWEEP, detach=detach, max_array_size=max_array_size)


def plan_text(options: dict, n: int, resources=None, **kw) -> str:
    return "\n\n".join(s.describe() for s in backend(options, **kw).plan(requests(n, resources))) + "\n"


EVERY_OPTION = {"partition": "gpu", "qos": "high", "account": "proj42", "comment": "lr sweep",
                "constraint": "a100", "exclude": "node[01-02]", "gres": "gpu:a100:2", "timeout_min": 90,
                "cpus_per_task": 8, "gpus_per_node": 2, "mem_gb": 32, "array_parallelism": 2,
                "additional_parameters": {"mail-type": "END", "mail_user": "me@lab.org"},
                "setup": ["module load cuda/12.1", "source /opt/venv/bin/activate"],
                "srun_args": ["--cpu-bind=none"]}
CASES = {
    "array_every_option.txt": (EVERY_OPTION, 6, None, {}),
    "single_run_cpu.txt": ({"mem_gb": 0.5, "timeout_min": 0.5, "stderr_to_stdout": True}, 1, None, {}),
    # runs 1 and 2 ask for GPUs and more time: a second array
    "per_group_resources.txt": ({"partition": "cpu"}, 4,
                                {1: RunResources(gpus_per_node=1, timeout_min=240, partition="gpu"),
                                 2: RunResources(gpus_per_node=1, timeout_min=240, partition="gpu")}, {}),
    "torchrun_allocation.txt": ({"nodes": 2, "gpus_per_node": 4, "cpus_per_task": 32, "torchrun": True,
                                 "rdzv_port": 29400}, 2, None, {}),
    # MaxArraySize 2: 5 runs -> arrays of 2, 2, 1; with a parallelism limit each waits for the last
    "split_max_array_size.txt": ({"array_parallelism": 1}, 5, None, {"max_array_size": 2}),
    "detach_aggregate.txt": ({"partition": "debug", "account": "proj42"}, 3, None, {"detach": True}),
    # 3 runs per task, MaxArraySize 2 (tasks): 7 runs -> an array of 2 tasks (6 runs), then one of 1
    "packed_split.txt": ({"runs_per_task": 3, "array_parallelism": 1}, 7, None, {"max_array_size": 2}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_scripts_match_golden(name: str) -> None:
    options, n, resources, kw = CASES[name]
    check_golden(name, plan_text(options, n, resources, **kw))


def test_every_option_reaches_the_script() -> None:
    text = plan_text(EVERY_OPTION, 6)
    for line in ["#SBATCH --array=0-5%2", "#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --account=proj42",
                 "#SBATCH --comment='lr sweep'", "#SBATCH --constraint=a100", "#SBATCH --exclude='node[01-02]'", "#SBATCH --gres=gpu:a100:2", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --gpus-per-node=2", "#SBATCH --mem=32GB",
                 "#SBATCH --mail-type=END", "#SBATCH --mail-user=me@lab.org", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120", "#SBATCH --job-name=train", "module load cuda/12.1", "--cpu-bind=none"]:
        assert line in text, line


def test_runs_with_different_resources_go_to_different_arrays() -> None:
    subs = backend({}).plan(requests(4, {1: RunResources(gpus_per_node=1), 3: RunResources(gpus_per_node=1)}))
    assert [[r.run.index for r in s.requests] for s in subs] == [[0, 2], [1, 3]]
    assert "--gpus-per-node=1" in subs[1].script and "gpus-per-node" not in subs[0].script


def test_arrays_are_split_so_the_highest_index_stays_under_max_array_size() -> None:
    subs = backend({"array_parallelism": None}, max_array_size=3).plan(requests(7))
    assert [len(s.requests) for s in subs] == [3, 3, 1]
    assert ["#SBATCH --array=0-2%3" in s.script for s in subs[:2]] == [True, True]
    assert "#SBATCH --array=0-0%1" in subs[2].script
    assert not any("--dependency" in " ".join(s.commands[0]) for s in subs)  # no limit: no chaining


def test_signal_delay_is_at_most_half_the_time_limit() -> None:
    opts = slurm_options({"timeout_min": 1})
    assert signal_delay(opts, array_resources(opts, RunResources())) == 30
    assert signal_delay(opts, array_resources(opts, RunResources(timeout_min=600))) == 120


@pytest.mark.parametrize("raw, message", [
    ({"partitio": "x"}, "hydra.launcher.partitio='x': not an option of mfcl_slurm; did you mean partition?"),
    ({"timeout_min": 0}, "hydra.launcher.timeout_min=0: must be > 0 minutes"),
    ({"array_parallelism": 0}, "hydra.launcher.array_parallelism=0: must be >= 1"),
    ({"nodes": 0}, "hydra.launcher.nodes=0: must be >= 1"),
    ({"partition": "a\nb"}, "hydra.launcher.partition='a\\nb': must be a non-empty one-line string"),
    ({"additional_parameters": {"mail type": "END"}}, "'mail type' is not an sbatch option name"),
    ({"rdzv_port": 70000}, "hydra.launcher.rdzv_port=70000: must be a TCP port"),
    ({"cpus_per_task": 0}, "hydra.launcher.cpus_per_task=0: must be >= 1"),
])
def test_bad_options_are_one_line_errors_naming_the_key(raw: dict, message: str) -> None:
    with pytest.raises(OptionError) as err:
        slurm_options(raw)
    assert message in str(err.value) and "\n" not in str(err.value).replace("a\\nb", "")


# -- sacct / squeue output (formats as printed by Slurm 22.05 on the test cluster) ---------------
def test_sacct_rows_expand_collapsed_arrays_and_task_rows_win() -> None:
    text = ("43_[2-3,5%2]|PENDING|0:0\n43_0|COMPLETED|0:0\n43_1|FAILED|7:0\n43_2|RUNNING|0:0\n"
            "44_[0-1]|CANCELLED by 0|0:0\n45|COMPLETED|0:0\n")
    rows = parse_sacct(text)
    assert rows == {"43_0": ("COMPLETED", "0:0"), "43_1": ("FAILED", "7:0"), "43_2": ("RUNNING", "0:0"),
                    "43_3": ("PENDING", "0:0"), "43_5": ("PENDING", "0:0"), "44_0": ("CANCELLED", "0:0"),
                    "44_1": ("CANCELLED", "0:0")}  # a bare "45" (a task shown without its index) is not used
    assert expand_ids("7_[0-2%1]") == ["7_0", "7_1", "7_2"] and expand_ids("7") == []
    # a job submitted without an array has only a bare id: used when the caller asks for it
    assert parse_sacct(text, plain={"45"})["45"] == ("COMPLETED", "0:0") and expand_ids("7", {"7"}) == ["7"]
    assert parse_squeue("51_0|RUNNING\n51_1|PENDING\n") == {"51_0": "RUNNING", "51_1": "PENDING"}


def test_ended_states_carry_the_reason_and_signal_exits() -> None:
    assert ended("4_1", "FAILED", "7:0").exit_code == 7 and ended("4_1", "FAILED", "7:0").error is None
    t = ended("4_1", "TIMEOUT", "0:15")
    assert t.exit_code == -15 and t.error == "Slurm job 4_1 reached its time limit (TIMEOUT)"
    assert "was killed by SIGKILL" in ended("4_1", "FAILED", "0:9").error
    assert "was cancelled" in ended("4_1", "CANCELLED", "0:15").error


def test_a_task_missing_from_sacct_is_not_done_until_the_grace_ends() -> None:
    q = FakeOutputQuery("", "", grace_s=60)
    assert q.states(["9_0"])["9_0"].done is False  # gone from squeue, sacct has not caught up
    q = FakeOutputQuery("", "", grace_s=0, has_result=lambda t: True)
    s = q.states(["9_0"])["9_0"]
    assert s.done and s.error is None  # its result file says how it went
    s = FakeOutputQuery("", "", grace_s=0).states(["9_0"])["9_0"]
    assert s.done and "without an accounting record" in s.error


def test_a_requeued_or_preempted_task_waiting_in_squeue_is_not_done() -> None:
    q = FakeOutputQuery("9_0|PREEMPTED|0:15\n9_1|REQUEUED|0:15\n", "9_0|PENDING\n9_1|PENDING\n")
    states = q.states(["9_0", "9_1"])
    assert not states["9_0"].done and not states["9_1"].done
    q = FakeOutputQuery("9_0|PREEMPTED|0:15\n", "")
    assert q.states(["9_0"])["9_0"].done and "was preempted" in q.states(["9_0"])["9_0"].error


# -- in-job pieces ----------------------------------------------------------------------------
def test_a_restarted_task_runs_as_the_next_attempt_and_drops_the_stale_result(tmp_path: Path) -> None:
    (req,) = requests(1)
    result = tmp_path / "r.1.pkl"
    result.write_bytes(b"stale")
    spec = JobSpec(**{**req.spec.__dict__, "result_path": str(result), "sweep_dir": str(tmp_path), "journal": False})
    job_path = tmp_path / "job.1.json"
    spec.write(job_path)
    new, path = restarted(spec, str(job_path), restarts=1, lead=True)
    assert new.attempt == 2 and JobSpec.from_json(Path(path).read_text()).attempt == 2
    assert not result.exists() and new.result_path == str(result)


def test_srun_tasks_become_torch_ranks_with_a_port_from_the_job_id() -> None:
    env = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2(x2)",
           "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}
    assert rank_env(env, rendezvous_port(env, None)) == {
        "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert rendezvous_port(env, 29400) == 29400
