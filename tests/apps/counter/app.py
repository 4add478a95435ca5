"""A tiny app that counts its executions: each run appends one line to a counter file that every
"cluster" of a test shares (O_APPEND lines do not interleave), then sleeps a little so that
sweeps started together overlap."""
import os
import socket
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> int:
    with open(cfg.counter, "a") as f:
        f.write(f"{cfg.x} {os.environ.get('MFCL_CLUSTER', '-')} {socket.gethostname()} {os.getpid()}\n")
    time.sleep(cfg.seconds)
    return int(cfg.x)


if __name__ == "__main__":
    main()
