"""mfcl_torchrun with the real torchrun on CPU (gloo): DDP sweeps, two node agents on localhost,
one driver per node, concurrent runs on their own ports, failing ranks, injection strings,
GPU slices, Hydra's launcher suites and the example app trained with DDP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apprun import APPS, manifest_runs, run_app
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

pytestmark = pytest.mark.slow  # each run starts torchrun agents (a torch import each)

REPO = Path(__file__).resolve().parents[1]
MFCL = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_torchrun", "hydra.launcher.progress=log"]
INJECTION = "a; $(touch {x}) ' \" \\ `touch {x}` \n end"


def rank_records(tmp_path: Path) -> dict[str, dict[int, dict]]:
    """{run_id: {rank: what that rank saw}}"""
    out: dict[str, dict[int, dict]] = {}
    for p in (tmp_path / "side").glob("*.json"):
        rec = json.loads(p.read_text())
        out.setdefault(rec["run_id"], {})[rec["rank"]] = rec
    return out


def test_discovery() -> None:
    assert "MfclTorchrunLauncher" in [p.__name__ for p in Plugins.instance().discover(Launcher)]


def test_concurrent_ddp_runs_all_reduce_on_their_own_ports(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = INJECTION.format(x=marker)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps({"grid": {"value": [value, "plain"]}}))
    proc = run_app("ddp_app", tmp_path, *MFCL, f"hydra.sweeper.sweep_file={sweep_file}", "seconds=5",
                   "hydra.launcher.nproc_per_node=2", "hydra.launcher.max_concurrent=2", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = manifest_runs(tmp_path / "sweep")
    assert sorted(r["status"] for r in runs.values()) == ["completed"] * 2
    assert all(r["return_value"] == "3" for r in runs.values())  # rank 0's result: 1 + 2
    seen = rank_records(tmp_path)
    assert sorted(seen) == sorted(runs)
    for run_id, ranks in seen.items():
        assert sorted(ranks) == [0, 1]
        job_dir = runs[run_id]["job_dir"]
        for rank, rec in ranks.items():
            env = rec["env"]
            assert (rec["world"], rec["all_reduce"]) == (2, 3)
            assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["NNODES"], env["NODE_RANK"]) == ("2", "2", "1", "0")
            # identity and Hydra's output dir reach every rank, not only rank 0
            assert env["MFCL_SWEEP_RUN_ID"] == run_id and env["MFCL_SWEEP_RUN_DIR"] == job_dir
            assert env["MFCL_SWEEP_INDEX"] == str(runs[run_id]["index"])
            assert rec["output_dir"] == job_dir
        assert ranks[0]["value"] == ranks[1]["value"]
        assert (Path(job_dir) / ".hydra" / "overrides.yaml").exists()
    # the value reached both ranks byte for byte, and nothing ran it
    assert [r["value"] for r in seen[next(i for i in seen if seen[i][0]["value"] == value)].values()] == [value] * 2
    assert not marker.exists()
    # the two runs overlapped (each sleeps 5 s after recording), each with its own rendezvous port
    starts = [ranks[0]["t"] for ranks in seen.values()]
    assert max(starts) - min(starts) < 5
    ports = {ranks[0]["env"]["MASTER_PORT"] for ranks in seen.values()}
    assert len(ports) == 2
    # only rank 0 wrote to the journal
    journal = [json.loads(line) for line in (tmp_path / "sweep" / ".mfcl" / "journal.jsonl").read_text().splitlines()]
    rank0_pids = {ranks[0]["pid"] for ranks in seen.values()}
    other_pids = {ranks[1]["pid"] for ranks in seen.values()}
    written = {str(e["f"]["pid"]) for e in journal if "pid" in e.get("f", {})}
    assert {str(p) for p in rank0_pids} <= written and not {str(p) for p in other_pids} & written


def test_failing_rank_fails_only_its_run_on_gpu_slices(tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps({"groups": [
        {"group": "pair", "params": {"fail_rank": [-1, 0, 1]}},
        {"group": "quad", "nproc_per_node": 4, "params": {"value": 4}},  # waits for all four GPUs
    ]}))
    proc = run_app("ddp_app", tmp_path, *MFCL, f"hydra.sweeper.sweep_file={sweep_file}", "hydra.launcher.nproc_per_node=2",
                   "hydra.launcher.gpus=[0,1,2,3]", "hydra.sweeper.fail_on_error=false", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = manifest_runs(tmp_path / "sweep")
    by_fail = {next((o for o in r["overrides"] if o.startswith("fail_rank=")), r["group"]): r for r in runs.values()}
    assert by_fail["fail_rank=-1"]["status"] == "completed" and by_fail["quad"]["status"] == "completed"
    for rank in (0, 1):
        r = by_fail[f"fail_rank={rank}"]
        assert r["status"] == "failed" and r["exit_code"] == 1, r
        assert f"rank {rank} exited with code 1: ValueError: rank {rank} fails on purpose" in r["error"], r["error"]
    # packing: a pair run's ranks share one two-GPU slice; the quad run got all four
    seen = rank_records(tmp_path)
    quad = seen.pop(by_fail["quad"]["run_id"])
    assert sorted(quad) == [0, 1, 2, 3] and {r["all_reduce"] for r in quad.values()} == {10}
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in quad.values()} == {"0,1,2,3"}
    for ranks in seen.values():
        assert len({r["env"]["CUDA_VISIBLE_DEVICES"] for r in ranks.values()}) == 1
        assert ranks[0]["env"]["CUDA_VISIBLE_DEVICES"] in ("0,1", "2,3")


def test_two_node_agents_on_localhost(tmp_path: Path) -> None:
    proc = run_app("ddp_app", tmp_path, *MFCL, "value=7", "hydra.launcher.nnodes=2", "hydra.launcher.nproc_per_node=1",
                   timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = manifest_runs(tmp_path / "sweep").values()
    assert run["status"] == "completed" and run["return_value"] == "3"
    (ranks,) = rank_records(tmp_path).values()
    assert sorted(ranks) == [0, 1]
    assert {r["env"]["NODE_RANK"] for r in ranks.values()} == {"0", "1"}
    assert all((r["env"]["NNODES"], r["env"]["WORLD_SIZE"], r["env"]["LOCAL_WORLD_SIZE"]) == ("2", "2", "1")
               for r in ranks.values())


def test_one_driver_per_node(tmp_path: Path) -> None:
    """Two drivers, as on two machines, each starting only its own node's agent."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(APPS / "ddp_app" / "app.py"), "--multirun", *MFCL, f"hydra.sweep.dir={tmp_path / 'sweep'}",
           f"side_dir={tmp_path / 'side'}", "value=5", "hydra.launcher.nnodes=2", f"hydra.launcher.master_port={port}"]
    drivers = [subprocess.Popen([*cmd, f"hydra.launcher.node_rank={k}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    outs = [d.communicate(timeout=240)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    (ranks,) = rank_records(tmp_path).values()
    assert sorted(ranks) == [0, 1] and {r["all_reduce"] for r in ranks.values()} == {3}
    (run,) = manifest_runs(tmp_path / "sweep").values()
    assert run["status"] == "completed"


def test_dry_run_prints_the_exact_commands(tmp_path: Path) -> None:
    proc = run_app("ddp_app", tmp_path, *MFCL, "value=1,2", "hydra.sweeper.dry_run=true", "hydra.launcher.nnodes=2",
                   "hydra.launcher.rdzv_conf={join_timeout:30}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("$ env ")]
    assert len(lines) == 4  # two runs, two node agents each
    assert all("-m torch.distributed.run" in ln and "--rdzv-conf join_timeout=30" in ln for ln in lines)
    endpoints = [ln.split("--rdzv-endpoint ")[1].split()[0] for ln in lines]
    assert endpoints[0] == endpoints[1] != endpoints[2] == endpoints[3]  # one port per run, shared by its nodes
    assert not (tmp_path / "side").exists()


@pytest.mark.parametrize("launcher_name, overrides", [("mfcl_torchrun", ["hydra/sweeper=mfcl"])])
class TestMfclTorchrunLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({}, ["-m", "hydra/launcher=mfcl_torchrun", "hydra/sweeper=mfcl"])])
class TestMfclTorchrunIntegration(IntegrationTestSuite):
    pass


def test_example_app_trains_with_ddp(tmp_path: Path) -> None:
    train = REPO / "example_app" / "train.py"
    if not train.exists():
        pytest.skip("example_app/train.py is not in this checkout")
    pytest.importorskip("sklearn")
    proc = subprocess.run(
        [sys.executable, str(train), "--multirun", *MFCL, f"hydra.sweep.dir={tmp_path / 'sweep'}",
         "hydra.launcher.nproc_per_node=2", "train.epochs=1", "optimizer.lr=0.1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = manifest_runs(tmp_path / "sweep")
    # one run: concurrent DDP runs are test_concurrent_ddp_runs_all_reduce_on_their_own_ports's
    assert len(runs) == 1 and all(r["status"] == "completed" for r in runs.values())
    for r in runs.values():
        assert 0.5 < float(r["return_value"]) <= 1.0  # validation accuracy after one epoch on digits
        comms = (Path(r["job_dir"]) / "comms.csv")
        assert comms.exists() and len(comms.read_text().splitlines()) > 1  # gradients were all-reduced


def test_timeout_kills_the_agent_and_every_rank(tmp_path: Path) -> None:
    proc = run_app("ddp_app", tmp_path, *MFCL, "seconds=600", "hydra.launcher.nproc_per_node=2",
                   "hydra.launcher.timeout=25", "hydra.sweeper.fail_on_error=false", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = manifest_runs(tmp_path / "sweep").values()
    assert run["status"] == "failed" and "timed out after 25s" in run["error"]
    (ranks,) = rank_records(tmp_path).values()
    assert sorted(ranks) == [0, 1]  # both ranks were running when the timeout struck
    for rec in ranks.values():  # ...and none outlived its killed agent
        stat = Path(f"/proc/{rec['pid']}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


# -- node agents on SSH hosts (the loopback sshd instances of scripts/ssh-test-hosts.sh) ---------
def ssh_hosts_overrides(tmp_path: Path, *hosts: str) -> list[str]:
    from services import SSH_HOSTS, require_service

    require_service("ssh")
    known = SSH_HOSTS.write_known_hosts(tmp_path / "known_hosts")
    return [f"hydra.launcher.hosts=[{','.join(hosts)}]", f"hydra.launcher.identity_file={SSH_HOSTS.key}",
            f"hydra.launcher.known_hosts_file={known}", "hydra.launcher.ssh_options=['LogLevel=ERROR']"]


def test_two_nodes_on_two_ssh_hosts(tmp_path: Path) -> None:
    from services import SSH_PORTS

    hosts = [f"127.0.0.1:{p}" for p in SSH_PORTS[:2]]
    marker = tmp_path / "pwned"  # the remote command is a shell line: values must not reach it
    value = INJECTION.format(x=marker)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps({"grid": {"value": [value]}}))
    proc = run_app("ddp_app", tmp_path, *MFCL, f"hydra.sweeper.sweep_file={sweep_file}", "hydra.launcher.nnodes=2",
                   "hydra.launcher.nproc_per_node=1", *ssh_hosts_overrides(tmp_path, *hosts), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = manifest_runs(tmp_path / "sweep")
    assert {r["status"] for r in runs.values()} == {"completed"} and len(runs) == 1
    assert not marker.exists()
    seen = rank_records(tmp_path)
    assert [r["value"] for ranks in seen.values() for r in ranks.values()] == [value, value]
    for run_id, ranks in seen.items():
        assert sorted(ranks) == [0, 1] and {r["all_reduce"] for r in ranks.values()} == {3}
        assert {r["env"]["NODE_RANK"] for r in ranks.values()} == {"0", "1"}
        log = (tmp_path / "sweep" / "logs" / "runs" / f"{run_id}.log").read_text()
        assert log.count("mfcl-ssh-pid") == 2  # each node's agent started by the supervisor over ssh


def test_a_timeout_stops_the_agents_on_ssh_hosts(tmp_path: Path) -> None:
    from services import SSH_PORTS

    hosts = [f"127.0.0.1:{p}" for p in SSH_PORTS[:2]]
    proc = run_app("ddp_app", tmp_path, *MFCL, "seconds=600", "hydra.launcher.nnodes=2", "hydra.launcher.nproc_per_node=1",
                   "hydra.launcher.timeout=25", "hydra.launcher.kill_grace_s=1", "hydra.sweeper.fail_on_error=false",
                   *ssh_hosts_overrides(tmp_path, *hosts), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = manifest_runs(tmp_path / "sweep").values()
    assert run["status"] == "failed" and "timed out after 25s" in run["error"]
    (ranks,) = rank_records(tmp_path).values()
    assert sorted(ranks) == [0, 1]

    def gone(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"

    from apprun import wait_for

    wait_for(lambda: all(gone(r["pid"]) for r in ranks.values()), timeout=30, what="the remote ranks to stop")


def test_a_host_that_cannot_run_agents_is_named_before_anything_starts(tmp_path: Path) -> None:
    from services import SSH_PORTS

    proc = run_app("ddp_app", tmp_path, *MFCL, "hydra.launcher.nnodes=2",
                   *ssh_hosts_overrides(tmp_path, f"127.0.0.1:{SSH_PORTS[0]}",
                                        f"{{host: 127.0.0.1, port: {SSH_PORTS[1]}, workdir: {tmp_path / 'nowhere'}}}"))
    assert proc.returncode != 0
    assert f"hydra.launcher.hosts[1] (127.0.0.1:{SSH_PORTS[1]}) has no directory {tmp_path / 'nowhere'}" in proc.stderr
    assert not (tmp_path / "side").exists()


def test_ssh_host_options_are_checked_before_launch(tmp_path: Path) -> None:
    for bad, message in [("hydra.launcher.hosts=[a:b:c]", "hydra.launcher.hosts[0]='a:b:c': expected [user@]host[:port]"),
                         ("hydra.launcher.hosts=[h1]", "hydra.launcher.nnodes=2: needs as many hosts"),
                         ("hydra.launcher.ssh_options=[-oops]",
                          "hydra.launcher.ssh_options=['-oops']: item '-oops': is not an ssh option")]:
        extra = ["hydra.launcher.hosts=[h1,h2]"] if "hosts" not in bad else []
        proc = run_app("ddp_app", tmp_path, *MFCL, "hydra.launcher.nnodes=2", bad, *extra)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
