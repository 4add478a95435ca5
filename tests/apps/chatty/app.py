"""A test app that talks: prints, logs, and ends without a newline; fails when asked."""
import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    n = cfg.get("n", 0)
    print(f"hello from job {n}", flush=True)
    log.info("logged by job %s", n)
    if cfg.get("fail", False):
        raise RuntimeError(f"job {n} fails")
    sys.stdout.write(f"last words of job {n}")


if __name__ == "__main__":
    main()
