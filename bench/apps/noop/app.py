"""A no-op Hydra task: what remains is pure launcher overhead."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None)
def main(cfg: DictConfig) -> int:
    return 0


if __name__ == "__main__":
    main()
