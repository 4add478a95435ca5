"""An app with config groups and a typed schema (tests/fixtures/app), returning its config."""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).parents[2] / "fixtures" / "app"))
import schema  # noqa: E402

schema.register()


@hydra.main(version_base="1.3", config_path="../../fixtures/app/conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg)


if __name__ == "__main__":
    main()
