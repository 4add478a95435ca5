"""Records when the first job of a sweep started (then every job is a no-op)."""
import os
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None)
def main(cfg: DictConfig) -> int:
    path = os.environ["BENCH_FIRST_JOB_FILE"]
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(str(time.time()))
    return 0


if __name__ == "__main__":
    main()
