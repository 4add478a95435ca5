"""W&B logging from telemetry, with the real wandb client in offline mode (nothing leaves the machine)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mfcl_sweeps.telemetry import Telemetry

pytest.importorskip("wandb")
REPO = Path(__file__).resolve().parents[1]


def wandb_records(run_file: Path):
    """Records of an offline `.wandb` file (W&B's leveldb-style log: 7-byte file header, 32 KiB
    blocks, each chunk `crc32 | length | type` then data; type 1 = full, 2/3/4 = first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = run_file.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_example_app_logs_group_name_and_overrides(offline, tmp_path):
    """...with secret values (a listed name; one named by hydra.sweeper.secret_keys, which the
    sweeper exports as MFCL_SECRET_KEYS; a secret env var) nowhere in the W&B run dir (config,
    metadata args, logs): the config shows those keys as `***`."""
    run_dir = tmp_path / "job"
    secrets = {"db": "pw-secret-4f1a", "custom": "hush-secret-9c2e", "env": "env-secret-77d0"}
    env = {**os.environ, "MFCL_SWEEP_ID": "sweep-w", "MFCL_SWEEP_RUN_ID": "00003_default_lr-0.2",
           "MFCL_SWEEP_RUN_DIR": str(run_dir), "MFCL_SECRET_KEYS": "hushkey", "MY_SERVICE_TOKEN": secrets["env"]}
    subprocess.run([sys.executable, str(REPO / "example_app/train.py"), "train.epochs=1", "optimizer.lr=0.2",
                    f"+db.password={secrets['db']}", f"+hushkey={secrets['custom']}",
                    "telemetry.wandb.enabled=true", f"hydra.run.dir={tmp_path / 'hydra'}"],
                   env=env, check=True, capture_output=True, timeout=120)
    [run_file] = offline_runs(run_dir)
    [run] = [r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "sweep-w"
    assert run.display_name == "00003_default_lr-0.2"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train.epochs"] == "1" and config["optimizer.lr"] == "0.2"
    assert config["telemetry.wandb.enabled"] == "true"
    assert config["db.password"] == "***" and config["hushkey"] == "***"
    for path in (run_dir / "wandb").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [name for name, value in secrets.items() if value.encode() in data], path
    logged = [r for r in wandb_records(run_file) if r.WhichOneof("record_type") == "history"]
    assert len(logged) >= 22  # one per step (23 steps per epoch) and the final eval


def test_buffered_mode_writes_nothing_before_checkpoint(offline, tmp_path):
    from mfcl_sweeps.wandb_sink import WandbSink

    sink = WandbSink(dir=str(tmp_path), project="p", group="g", name="n", buffer=True)
    tel = Telemetry(tmp_path, wandb=sink)
    for _ in range(5):
        tel.log_step(samples=8)
    tel.log_eval({"accuracy": 0.5})
    assert not (tmp_path / "wandb").exists() and sink.run is None
    tel.checkpoint()
    assert len(offline_runs(tmp_path)) == 1 and not sink.pending
    tel.log_step(samples=8)
    assert len(sink.pending) == 1  # held again until the next checkpoint
    tel.close()
    import wandb

    wandb.teardown()  # the wandb service completes the offline file at teardown (process exit)
    history = [r for r in wandb_records(offline_runs(tmp_path)[0]) if r.WhichOneof("record_type") == "history"]
    assert [r.history.step.num for r in history] == [1, 2, 3, 4, 5, 6]

