"""A plain Hydra app that returns its metric, as Hydra users write them for Optuna: a number
(`ret=float`) or a dict of numbers (`ret=dict`). With `telemetry=true` it also logs eval.csv and
timings.csv through mfcl_sweeps.telemetry (a simulated clock: 2 s per step). `sleep` makes a run
take that many seconds (for live views); `fail=true` raises."""
import time

import hydra
from omegaconf import DictConfig


def score(lr: float, seed: int) -> float:
    """Best at lr=0.1; seeds shift the score by 0.01 each."""
    return round(1.0 - (lr - 0.1) ** 2 * 10 + 0.01 * seed, 6)


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig):
    time.sleep(float(cfg.sleep))
    if cfg.fail:
        raise RuntimeError(f"diverged at lr={cfg.lr}")
    value = score(float(cfg.lr), int(cfg.seed))
    if cfg.telemetry:
        from mfcl_sweeps.telemetry import Telemetry

        now = [0.0]
        tel = Telemetry.from_config(cfg, clock=lambda: now[0], streams=("timings", "eval"))
        for step in range(1, 6):
            now[0] += 2.0
            tel.log_step(samples=8)
            tel.log_eval({"accuracy": round(value * step / 5, 6)})
        tel.close()
    if cfg.ret == "dict":
        return {"val_loss": round(1.0 - value, 6), "acc": value, "note": "not a number"}
    return value


if __name__ == "__main__":
    main()
