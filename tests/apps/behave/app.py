"""A test app whose jobs misbehave on request (crash, hang, stay silent, fail once), and record
what they saw in a side directory, so tests can check isolation, timeouts, retries and identity."""
import ctypes
import json
import os
import signal
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    side = Path(cfg.side_dir)
    side.mkdir(parents=True, exist_ok=True)
    run = os.environ.get("MFCL_SWEEP_RUN_ID", f"job{os.getpid()}")
    with open(side / "starts.txt", "a") as f:  # one line per start; O_APPEND lines do not interleave
        f.write(f"{run}\n")
    record = {
        "run_id": run,
        "value": cfg.value,
        "env": {k: v for k, v in os.environ.items() if k.startswith("MFCL_") or k == "CUDA_VISIBLE_DEVICES"},
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "t": time.time(),
    }
    (side / f"{run}.json").write_text(json.dumps(record))
    mode = cfg.mode
    if mode == "sleep":
        time.sleep(float(cfg.seconds))
    elif mode == "raise":
        raise ValueError(f"boom on value {cfg.value}")
    elif mode == "exit":
        os._exit(3)
    elif mode == "segfault":
        ctypes.string_at(0)
    elif mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "silent":  # prints once, then nothing: only idle_timeout can stop it
        print("started", flush=True)
        time.sleep(float(cfg.seconds))
    elif mode == "children":  # a subprocess, and one that escapes its group (setsid), then sleeps
        import subprocess

        kids = [subprocess.Popen(["sleep", "300"]).pid,
                subprocess.Popen(["sleep", "301"], start_new_session=True).pid]
        (side / f"{run}.children").write_text(" ".join(map(str, kids)))
        end = time.time() + float(cfg.seconds)
        while time.time() < end and not (side / "release").exists():  # `release`: finish now
            time.sleep(0.1)
    elif mode == "stubborn":  # ignores SIGTERM: only SIGKILL ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("started", flush=True)
        time.sleep(float(cfg.seconds))
    elif mode == "fail_once":
        marker = side / f"{run}.failed_once"
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("first attempt fails")
    with open(side / "completions.txt", "a") as f:
        f.write(f"{run}\n")
    return float(len(str(cfg.value)))


if __name__ == "__main__":
    main()
