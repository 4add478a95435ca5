"""mfcl_torchrun's pure side: option validation, per-run resolution, ports, exact command lines,
GPU slices, and how a failed rank is reported. Nothing is started here; tests/test_torchrun.py
runs the real torchrun."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from mfcl_sweeps.backends.torchrun.backend import (
    PortAllocator,
    TorchrunBackend,
    TorchrunOptions,
    failure_reason,
    node_command,
    resolve,
)
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.launch.driver import make_request
from mfcl_sweeps.model import PlannedRun, RunResources

PY = sys.executable


def request(tmp_path: Path, run_id: str = "00000_default", attempt: int = 1, **resources):
    run = PlannedRun(overrides=("a=1",), config_hash="c0ffee" * 4, index=0, run_id=run_id,
                     resources=RunResources(**resources))
    return make_request(run, ["a=1"], sweep_dir=str(tmp_path), session_path=str(tmp_path / "s.pkl"), attempt=attempt)


def fixed_ports(*ports: int):
    it = iter(ports)
    return lambda: next(it)


def test_single_node_command_is_exact(tmp_path: Path) -> None:
    req = request(tmp_path)
    launch = resolve(TorchrunOptions(nproc_per_node=2), req, fixed_ports(41000), {})
    state = tmp_path / ".mfcl" / "torchrun" / "00000_default.1"
    assert node_command(launch, 0) == [
        "env", "NNODES=1", "NODE_RANK=0", f"TORCHELASTIC_ERROR_FILE={state}/node0.error.json",
        PY, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:41000", "--rdzv-id", "mfcl-c0ffeec0ffeec0ff-1",
        "--max-restarts", "0", "--monitor-interval", "0.1", "--log-dir", f"{state}/node0",
        "-m", "mfcl_sweeps.ddp_worker", str(tmp_path / "s.pkl"), req.job_path]


def test_every_option_reaches_the_command(tmp_path: Path) -> None:
    opts = TorchrunOptions(nproc_per_node=4, nnodes=2, rdzv_backend="static", rdzv_endpoint="10.0.0.1:29400",
                           rdzv_id="myjob", rdzv_conf={"join_timeout": 30, "read_timeout": 9}, max_restarts=2,
                           monitor_interval=0.5, extra_args=["--tee", "3"], python="/opt/py")
    launch = resolve(opts, request(tmp_path), fixed_ports(), {})
    assert launch.nodes == (0, 1)
    argv = node_command(launch, 1, host="10.0.0.2", gpus=["4", "5", "6", "7"])
    assert argv[:5] == ["env", "NNODES=2", "NODE_RANK=1", argv[3], "CUDA_VISIBLE_DEVICES=4,5,6,7"]
    flags = argv[argv.index("/opt/py"):]
    for pair in (["--nnodes", "2"], ["--nproc-per-node", "4"], ["--rdzv-backend", "static"],
                 ["--rdzv-endpoint", "10.0.0.1:29400"], ["--rdzv-id", "myjob"], ["--node-rank", "1"],
                 ["--rdzv-conf", "join_timeout=30,read_timeout=9"], ["--local-addr", "10.0.0.2"],
                 ["--max-restarts", "2"], ["--monitor-interval", "0.5"], ["--tee", "3"]):
        i = flags.index(pair[0])
        assert flags[i:i + 2] == pair, pair


def test_run_resources_override_launcher_options(tmp_path: Path) -> None:
    req = request(tmp_path, nnodes=3, nproc_per_node=2,
                  rendezvous={"backend": "static", "endpoint": "node0:1234", "id": "r7", "conf": {"timeout": 5}})
    opts = TorchrunOptions(nproc_per_node=8, nnodes=1, rdzv_endpoint="other:99", rdzv_id="x", rdzv_conf="a=b")
    launch = resolve(opts, req, fixed_ports(), {})
    assert (launch.nnodes, launch.nproc_per_node, launch.nodes) == (3, 2, (0, 1, 2))
    assert (launch.rdzv_backend, launch.rdzv_endpoint, launch.rdzv_id, launch.rdzv_conf) == \
        ("static", "node0:1234", "r7", "timeout=5")


def test_port_precedence(tmp_path: Path) -> None:
    req = request(tmp_path)
    take = fixed_ports(40001)
    assert resolve(TorchrunOptions(rdzv_endpoint="h:7"), req, take, {"MASTER_PORT": "9"}).rdzv_endpoint == "h:7"
    assert resolve(TorchrunOptions(rdzv_endpoint="h", master_port=8), req, take, {"MASTER_PORT": "9"}).rdzv_endpoint == "h:8"
    assert resolve(TorchrunOptions(), req, take, {"MASTER_PORT": "9"}).rdzv_endpoint == "127.0.0.1:9"
    assert resolve(TorchrunOptions(master_addr="h2"), req, take, {}).rdzv_endpoint == "h2:40001"
    with pytest.raises(MfclError, match="MASTER_PORT='x'"):
        resolve(TorchrunOptions(), req, take, {"MASTER_PORT": "x"})


def test_port_allocator_never_repeats_and_ports_are_free() -> None:
    import socket

    take = PortAllocator()
    ports = [take() for _ in range(50)]
    assert len(set(ports)) == 50
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out


def test_one_driver_per_node_starts_only_its_node(tmp_path: Path) -> None:
    req = request(tmp_path, nnodes=2, node_rank=1, rendezvous={"endpoint": "head:29500"})
    backend = TorchrunBackend(TorchrunOptions(), ports=fixed_ports(), environ={})
    (sub,) = backend.plan([req])
    (argv,) = sub.commands
    assert "NODE_RANK=1" in argv and argv[-2:] == ["--node-result", sub.extra["launch"].node_result]
    # this driver's result is its own node's local rank 0's
    assert sub.requests[0].spec.result_path == sub.extra["launch"].node_result != req.spec.result_path
    with pytest.raises(MfclError, match="node_rank=1 of nnodes=2 needs a rendezvous port"):
        resolve(TorchrunOptions(), request(tmp_path, nnodes=2, node_rank=1), fixed_ports(1), {})
    with pytest.raises(MfclError, match=r"node_rank=2: must be in \[0, nnodes=2\)"):
        resolve(TorchrunOptions(master_port=5), request(tmp_path, nnodes=2, node_rank=2), fixed_ports(), {})


def test_local_multi_node_starts_every_agent_on_one_endpoint(tmp_path: Path) -> None:
    backend = TorchrunBackend(TorchrunOptions(nnodes=2, nproc_per_node=1), ports=fixed_ports(41234), environ={})
    (sub,) = backend.plan([request(tmp_path)])
    assert [a[2] for a in sub.commands] == ["NODE_RANK=0", "NODE_RANK=1"]
    assert all(a[a.index("--rdzv-endpoint") + 1] == "127.0.0.1:41234" for a in sub.commands)
    assert sub.requests[0].spec.result_path.endswith("00000_default.1.pkl")
    assert "$ env NNODES=2 NODE_RANK=1" in sub.describe()


@pytest.mark.parametrize("options, message", [
    ({"nproc_per_node": 0}, "hydra.launcher.nproc_per_node=0"),
    ({"nproc_per_node": "many"}, "nproc_per_node='many'"),
    ({"nnodes": "1:2"}, "hydra.launcher.nnodes='1:2'"),
    ({"nnodes": 2, "node_rank": 2}, "hydra.launcher.node_rank=2"),
    ({"rdzv_endpoint": "h:99999"}, "hydra.launcher.rdzv_endpoint='h:99999'"),
    ({"rdzv_conf": "novalue"}, "hydra.launcher.rdzv_conf='novalue'"),
    ({"rdzv_conf": {"a": "x,y"}}, "hydra.launcher.rdzv_conf.a="),
    ({"max_restarts": -1}, "hydra.launcher.max_restarts=-1"),
    ({"monitor_interval": 0}, "hydra.launcher.monitor_interval=0"),
    ({"master_port": 0}, "hydra.launcher.master_port=0"),
    ({"no_such": 1}, "hydra.launcher.no_such=1: not an option of mfcl_torchrun"),
    ({"gpus": [0, 1], "nproc_per_node": 4}, "needs 4 GPU"),
])
def test_bad_options_name_the_option(options: dict, message: str) -> None:
    with pytest.raises(MfclError) as err:
        TorchrunBackend.from_options(options, session=None)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_gpu_slices_pack_runs_and_wait_for_big_ones(tmp_path: Path) -> None:
    backend = TorchrunBackend(TorchrunOptions(nproc_per_node=2, gpus=[0, 1, 2, 3]), ports=PortAllocator(), environ={})
    assert backend.max_concurrent == 4 and backend.capacity() == 2
    subs = backend.plan([request(tmp_path, "r0"), request(tmp_path, "r1"), request(tmp_path, "r2", nproc_per_node=4)])
    cvd = [[a for a in s.commands[0] if a.startswith("CUDA_VISIBLE_DEVICES=")] for s in subs]
    assert cvd == [["CUDA_VISIBLE_DEVICES=0,1"], ["CUDA_VISIBLE_DEVICES=2,3"], []]
    assert subs[2].extra["gpus"] is None  # submitted, it waits until 4 GPUs are free
    with pytest.raises(MfclError, match="needs 6 GPU"):
        backend.plan([request(tmp_path, "r3", nproc_per_node=6)])
    two_nodes = TorchrunBackend(TorchrunOptions(nproc_per_node=1, nnodes=2, gpus=[5, 7]), ports=PortAllocator(), environ={})
    (sub,) = two_nodes.plan([request(tmp_path)])
    assert [a[4] for a in sub.commands] == ["CUDA_VISIBLE_DEVICES=5", "CUDA_VISIBLE_DEVICES=7"]
    assert TorchrunBackend(TorchrunOptions(pack_gpus=False, gpus=[0]), environ={}).capacity() >= 1


def test_failure_reason_from_error_file_then_log(tmp_path: Path) -> None:
    err = tmp_path / "node0.error.json"
    err.write_text(json.dumps({"message": {"message": "ValueError: boom", "errorCode": 3,
                                           "extraInfo": {"mfcl_rank": 1, "py_callstack": "", "timestamp": "0"}}}))
    assert failure_reason(str(err), "") == (3, "rank 1 exited with code 3: ValueError: boom")
    log = """
Root Cause (first observed failure):
[0]:
  time      : 2026-01-01_00:00:00
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
"""
    assert failure_reason(str(tmp_path / "missing.json"), log) == \
        (-9, "rank 1 exited with code -9 (SIGKILL): Signal 9 (SIGKILL) received by PID 4242")
    assert failure_reason(str(tmp_path / "missing.json"), "nothing useful") is None


def test_nodes_on_ssh_hosts_are_exact_ssh_commands(tmp_path: Path) -> None:
    import shlex

    opts = TorchrunOptions(nnodes=2, hosts=["gpu1", {"host": "gpu2", "port": 2222, "user": "me", "python": "/opt/py",
                                                     "env": {"NCCL_SOCKET_IFNAME": "eth0"}}],
                           identity_file="/k/id", workdir="/shared/proj")
    backend = TorchrunBackend(opts, ports=fixed_ports(29511))
    req = request(tmp_path)
    (sub,) = backend.plan([req])
    launch = sub.extra["launch"]
    assert launch.rdzv_endpoint == "gpu1:29511"  # node 0's host, unless an endpoint is given
    first, second = sub.commands
    assert first[-2] == "gpu1" and "-i" in first and first[first.index("-i") + 1] == "/k/id"
    assert second[second.index("-p") + 1] == "2222" and second[-2] == "me@gpu2"
    remote = shlex.split(second[-1])  # the one shell line ssh runs there: every word quoted
    assert remote[:3] == ["cd", "/shared/proj", "&&"]
    assert remote[4:7] == ["env", "NCCL_SOCKET_IFNAME=eth0", "/opt/py"]
    agent = remote[remote.index("--") + 1:]
    assert agent == node_command(dataclasses.replace(launch, python="/opt/py"), 1, host="gpu2")
    assert json.loads(remote[remote.index("--") - 1]) == json.loads(req.spec.to_json())
    assert backend.max_concurrent == 1 and not backend.pack


@pytest.mark.parametrize("options, message", [
    ({"nnodes": 3, "hosts": ["a", "b"]}, "hydra.launcher.nnodes=3: needs as many hosts; hydra.launcher.hosts lists 2"),
    ({"nnodes": 2, "node_rank": 0, "hosts": ["a", "b"], "master_port": 1},
     "hydra.launcher.node_rank=0 with hydra.launcher.hosts"),
    ({"hosts": ["a"], "pack_gpus": True, "gpus": [0]}, "hydra.launcher.pack_gpus=true with hydra.launcher.hosts"),
    ({"hosts": ["a@b@c"]}, "hydra.launcher.hosts[0]='a@b@c': expected [user@]host[:port]"),
    ({"hosts": [{"host": "a", "sltos": 1}]}, "hydra.launcher.hosts[0].sltos: unknown host key"),
])
def test_bad_host_options_are_one_clear_line(options, message) -> None:
    with pytest.raises(MfclError) as err:
        TorchrunBackend(TorchrunOptions(**options))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_run_needing_more_nodes_than_hosts_is_named(tmp_path: Path) -> None:
    backend = TorchrunBackend(TorchrunOptions(hosts=["a", "b"]), ports=fixed_ports(1))
    with pytest.raises(MfclError, match="run 00000_default: nnodes=3 needs 3 hosts but hydra.launcher.hosts lists 2"):
        backend.plan([request(tmp_path, nnodes=3)])


def test_a_run_with_its_own_node_rank_cannot_use_hosts(tmp_path: Path) -> None:
    backend = TorchrunBackend(TorchrunOptions(nnodes=2, hosts=["a", "b"]), ports=fixed_ports(1))
    with pytest.raises(MfclError, match=r"run 00000_default: resources.node_rank=1: not with hydra.launcher.hosts"):
        backend.plan([request(tmp_path, node_rank=1)])
