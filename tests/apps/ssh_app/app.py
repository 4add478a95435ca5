"""Test app for the SSH launcher: records where and how often each run started and finished."""
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    side = Path(cfg.side_dir)
    side.mkdir(parents=True, exist_ok=True)
    tag = os.environ.get("HOST_TAG", "none")
    with open(side / "started.log", "a") as f:
        f.write(f"{cfg.x} {tag} {os.getcwd()}\n")
    time.sleep(cfg.slow_s if tag == cfg.slow_tag else cfg.sleep_s)
    if cfg.v != "":
        (side / f"v-{cfg.x}.bin").write_bytes(cfg.v.encode())
    Path(os.environ["MFCL_SWEEP_RUN_DIR"], "artifact.txt").write_text(f"{cfg.x} {tag}\n")
    if cfg.fail:
        raise RuntimeError(f"run {cfg.x} failed on purpose")
    with open(side / "done.log", "a") as f:
        f.write(f"{cfg.x} {tag}\n")
    return cfg.x * 2


if __name__ == "__main__":
    main()
