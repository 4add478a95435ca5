"""`mfcl-sweeps init`: on a copy of example_app/ and on a fresh Hydra app, with the real Slurm
test cluster's sbatch/sinfo on PATH and with a PATH that has no scheduler. The written files must
parse, `count` must work on the sweep file, a dry run with the written preset must print what it
would submit, and a second init must change nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from services import require_service
from tmuxdrive import Tmux

from mfcl_sweeps.project import scan as project_scan

REPO = Path(__file__).resolve().parent.parent
FRESH_APP = textwrap.dedent("""
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base=None, config_path="configs", config_name="main")
    def train(cfg: DictConfig) -> float:
        return cfg.lr * cfg.net.width

    if __name__ == "__main__":
        train()
""")


def fresh_app(root: Path) -> Path:
    conf = root / "src" / "configs"
    (conf / "net").mkdir(parents=True)
    (conf / "main.yaml").write_text("defaults:\n  - net: small\n  - _self_\nseed: 0\nlr: 0.05\nepochs: 3\n")
    (conf / "net" / "small.yaml").write_text("width: 8\n")
    (conf / "net" / "big.yaml").write_text("width: 64\n")
    (root / "src" / "fit.py").write_text(FRESH_APP)
    (root / "notes.py").write_text("def main():\n    pass\n")  # not an app
    return root


def no_scheduler_path(tmp_path: Path) -> str:
    """A PATH with this Python (as `python`) and nothing else: no sbatch, qsub or nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    return str(bin_dir)


def cli(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    return subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def sweep_count(sweep_file: Path) -> int:
    """The expected run count from the file's own text: the product of its grid lists, times seeds."""
    doc = yaml.safe_load(sweep_file.read_text())
    n = 1
    for values in doc["grid"].values():
        n *= len(values)
    return n * doc.get("seeds", 1)


def run_printed(command: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def printed_dry_run(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if "hydra.sweeper.dry_run=true" in line)


def check_slurm_dry_run(init_out: str, root: Path, runs: int, partition: str) -> None:
    """The dry run init printed lists the runs and a job script the real sbatch accepts."""
    dry = run_printed(printed_dry_run(init_out), root)
    assert dry.returncode == 0, dry.stderr
    assert f"mfcl dry run: {runs} run(s)" in dry.stdout
    assert f"#SBATCH --partition={partition}" in dry.stdout and "#SBATCH --array=" in dry.stdout
    script = root / "job.sh"  # the printed script, checked by sbatch --test-only (nothing submitted)
    script.write_text(dry.stdout[dry.stdout.index("#!/bin/bash"):dry.stdout.index("$ sbatch")])
    test_only = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
    assert test_only.returncode == 0 and "to start at" in test_only.stderr, test_only.stderr


def default_partition() -> str:
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    return next(p.rstrip("*") for p in sinfo.split() if p.endswith("*"))


# -- probes, against the real things ------------------------------------------------------------
@pytest.mark.slurm
def test_schedulers_reads_the_real_partitions():
    require_service("slurm")
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    [slurm] = [s for s in project_scan.schedulers() if s.kind == "slurm"]
    assert set(slurm.queues) == {p.rstrip("*") for p in sinfo.split()}
    assert slurm.default_queue == next(p.rstrip("*") for p in sinfo.split() if p.endswith("*"))


def test_probes_find_nothing_on_an_empty_path(tmp_path):
    assert project_scan.schedulers(str(tmp_path)) == [] and project_scan.gpus(str(tmp_path)) == []


def test_parsers():
    assert project_scan.parse_sinfo("debug*\ngpu\ngpu\n") == (["debug", "gpu"], "debug")
    qstat = "Queue  Max Tot Ena\n-----  --- --- ---\nworkq  0 0 yes\nlong  0 0 yes\n"
    assert project_scan.parse_qstat_queues(qstat) == ["workq", "long"]


def test_find_apps_reads_the_decorator(tmp_path):
    fresh_app(tmp_path)
    (tmp_path / "other.py").write_text("from hydra import main\n@main(config_path='configs', config_name='main')\n"
                                       "def f(cfg):\n    pass\n")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text((tmp_path / "other.py").read_text())
    apps = project_scan.find_apps(tmp_path)
    assert [a.script.relative_to(tmp_path).as_posix() for a in apps] == ["other.py", "src/fit.py"]
    assert apps[1].config_dir == (tmp_path / "src" / "configs").resolve() and apps[1].config_name == "main"


# -- init ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.slurm
def test_init_example_app_with_slurm(tmp_path):
    require_service("slurm")
    root = tmp_path / "example_app"
    shutil.copytree(REPO / "example_app", root)
    first = cli("init", "--yes", cwd=root)
    assert first.returncode == 0, first.stderr
    sweep = root / "sweeps" / "example.yaml"
    presets = {p.stem: yaml.safe_load(p.read_text()) for p in (root / "conf" / "hydra" / "launcher").glob("*.yaml")}
    assert {"local", "cluster"} <= set(presets)
    default = default_partition()
    assert presets["cluster"]["defaults"][0] == "mfcl_slurm" and presets["cluster"]["partition"] == default
    doc = yaml.safe_load(sweep.read_text())
    assert set(doc["grid"]) <= set(project_scan.leaf_values(project_scan.compose_app(
        project_scan.find_apps(root)[0])[0])) | {"model", "optimizer", "data"}
    count = cli("count", "sweeps/example.yaml", cwd=root)
    assert count.returncode == 0 and int(count.stdout) == sweep_count(sweep) > 1

    check_slurm_dry_run(first.stdout, root, sweep_count(sweep), default)

    before = snapshot(root)
    second = cli("init", "--yes", cwd=root)
    assert second.returncode == 0 and second.stdout.count("unchanged:") == len(presets) + 1
    assert snapshot(root) == before


@pytest.mark.slow
def test_init_fresh_app_without_a_scheduler(tmp_path):
    root = fresh_app(tmp_path / "proj")
    path = no_scheduler_path(tmp_path)
    first = cli("init", "--yes", "--app", "src/fit.py", cwd=root, path=path)
    assert first.returncode == 0, first.stderr
    assert "scheduler: none on PATH" in first.stdout and "GPUs: none" in first.stdout
    launchers = root / "src" / "configs" / "hydra" / "launcher"
    assert sorted(p.name for p in launchers.iterdir()) == ["local.yaml"]
    sweep = root / "sweeps" / "example.yaml"
    doc = yaml.safe_load(sweep.read_text())
    assert doc["grid"] == {"net": ["small", "big"], "lr": [0.05, 0.005]} and doc["seeds"] == 2
    count = cli("count", "sweeps/example.yaml", cwd=root, path=path)
    assert int(count.stdout) == sweep_count(sweep)

    dry = run_printed(printed_dry_run(first.stdout), root, path)
    assert dry.returncode == 0, dry.stderr
    assert f"mfcl dry run: {sweep_count(sweep)} run(s)" in dry.stdout and "net=big" in dry.stdout

    before = snapshot(root)
    again = cli("init", "--yes", "--app", "src/fit.py", cwd=root, path=path)
    assert again.returncode == 0 and snapshot(root) == before


@pytest.mark.slow
@pytest.mark.slurm
def test_init_fresh_app_with_slurm(tmp_path):
    require_service("slurm")
    root = fresh_app(tmp_path / "proj")
    first = cli("init", "--yes", cwd=root)
    assert first.returncode == 0, first.stderr
    sweep = root / "sweeps" / "example.yaml"
    assert int(cli("count", "sweeps/example.yaml", cwd=root).stdout) == sweep_count(sweep)
    check_slurm_dry_run(first.stdout, root, sweep_count(sweep), default_partition())
    before = snapshot(root)
    assert cli("init", "--yes", cwd=root).returncode == 0 and snapshot(root) == before


@pytest.mark.slow
def test_init_with_sbatch_writes_the_cluster_preset_and_never_overwrites(tmp_path):
    if shutil.which("sbatch") is None:
        require_service("slurm")
    root = fresh_app(tmp_path / "proj")
    first = cli("init", "--yes", "--app", "src/fit.py", "--account", "proj42", "--time-min", "30",
                "--ssh-host", "me@gpu1:4", cwd=root)
    assert first.returncode == 0, first.stderr
    launchers = root / "src" / "configs" / "hydra" / "launcher"
    cluster = yaml.safe_load((launchers / "cluster.yaml").read_text())
    assert cluster["account"] == "proj42" and cluster["timeout_min"] == 30
    assert yaml.safe_load((launchers / "ssh.yaml").read_text())["hosts"] == ["me@gpu1:4"]
    assert "hydra/launcher=cluster" in first.stdout

    (launchers / "cluster.yaml").write_text("# mine\n")
    kept = cli("init", "--yes", "--app", "src/fit.py", cwd=root)
    assert "kept (differs; --force overwrites): src/configs/hydra/launcher/cluster.yaml" in kept.stdout
    assert (launchers / "cluster.yaml").read_text() == "# mine\n"
    forced = cli("init", "--yes", "--force", "--app", "src/fit.py", cwd=root)
    assert "overwritten: src/configs/hydra/launcher/cluster.yaml" in forced.stdout
    assert yaml.safe_load((launchers / "cluster.yaml").read_text())["defaults"][0] == "mfcl_slurm"


@pytest.mark.parametrize("args, message", [
    (("--app", "nope.py"), "--app nope.py: not a @hydra.main script"),
    (("sub",), "no @hydra.main script under"),
])
def test_init_errors_are_one_line(tmp_path, args, message):
    fresh_app(tmp_path)
    (tmp_path / "sub").mkdir()
    cwd = tmp_path
    proc = cli("init", "--yes", *args, cwd=cwd)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "sub" / "sweeps").exists()


def test_gpus_found_by_nvidia_smi_give_local_runs_a_gpu_each(tmp_path):
    """No GPU here: a stand-in nvidia-smi (named as a double) prints what the real one prints
    for `--query-gpu=name,memory.total --format=csv,noheader`."""
    double = tmp_path / "nvidia_smi_double"
    double.mkdir()
    smi = double / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$1" = --query-gpu=name,memory.total ] && printf "NVIDIA H200, 143771 MiB\\n'
                   'NVIDIA H200, 143771 MiB\\n"\n')
    smi.chmod(0o755)
    assert project_scan.gpus(str(double)) == ["NVIDIA H200, 143771 MiB"] * 2
    root = fresh_app(tmp_path / "proj")
    proc = cli("init", "--yes", cwd=root, path=f"{double}:{no_scheduler_path(tmp_path)}")
    assert proc.returncode == 0, proc.stderr
    assert "GPUs: NVIDIA H200, 143771 MiB; NVIDIA H200, 143771 MiB" in proc.stdout
    local = yaml.safe_load((root / "src" / "configs" / "hydra" / "launcher" / "local.yaml").read_text())
    assert local["gpus_per_job"] == 1


@pytest.mark.slow
@pytest.mark.slurm
def test_init_asks_on_a_terminal(tmp_path):
    require_service("slurm")
    root = fresh_app(tmp_path / "proj")
    (root / "other.py").write_text(FRESH_APP.replace('"configs"', '"src/configs"'))
    t = Tmux(f"{sys.executable} -m mfcl_sweeps.cli init", root)
    try:
        t.wait_for("which app [1-2, default 1]:")
        assert "1. other.py" in t.screen() and "2. src/fit.py" in t.screen()
        t.type("2")
        t.keys("Enter")
        t.wait_for("Slurm partition [")
        t.keys("Enter")
        t.wait_for("PBS queue [")
        t.keys("Enter")
        t.wait_for("account [none]:")
        t.type("acct9")
        t.keys("Enter")
        t.wait_for("SSH hosts for hydra/launcher=ssh")
        t.type("me@gpu1:2222:4, gpu2")
        t.keys("Enter")
        screen = t.wait_for("write these files? [Y/n]")
        assert "will write " + str(root / "sweeps" / "example.yaml") in screen
        t.keys("Enter")
        t.wait_for("created: src/configs/hydra/launcher/cluster.yaml")
    finally:
        t.close()
    launchers = root / "src" / "configs" / "hydra" / "launcher"
    cluster = yaml.safe_load((launchers / "cluster.yaml").read_text())
    assert cluster["account"] == "acct9" and cluster["partition"] == project_scan.schedulers()[0].default_queue
    assert yaml.safe_load((launchers / "ssh.yaml").read_text())["hosts"] == ["me@gpu1:2222:4", "gpu2"]


@pytest.mark.slow
def test_ctrl_c_at_a_question_writes_nothing(tmp_path):
    root = fresh_app(tmp_path / "proj")
    t = Tmux(f"{sys.executable} -m mfcl_sweeps.cli init; echo rc=$?", root)
    try:
        t.wait_for("]:")  # the first question (a partition with sbatch on PATH, else the SSH hosts)
        t.keys("C-c")
        screen = t.wait_for("rc=130")
    finally:
        t.close()
    assert "init: interrupted; nothing written" in screen and "Traceback" not in screen
    assert not (root / "sweeps").exists()


def test_an_app_whose_config_does_not_compose_gets_a_one_run_example(tmp_path):
    root = fresh_app(tmp_path / "proj")
    (root / "src" / "configs" / "main.yaml").write_text("defaults:\n  - net: missing\n")
    proc = cli("init", "--yes", cwd=root, path=no_scheduler_path(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "warning: src/fit.py's config does not compose without running it" in proc.stdout
    assert yaml.safe_load((root / "sweeps" / "example.yaml").read_text())["runs"] == [{"name": "baseline"}]
    assert cli("count", "sweeps/example.yaml", cwd=root).stdout.strip() == "1"
