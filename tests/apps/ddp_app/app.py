"""A DDP test app: every rank joins a gloo process group, all-reduces its rank + 1, and records
what it saw (rank, sizes, environment, Hydra's output dir, the raw `value`) in a side directory."""
import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

SEEN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NNODES", "NODE_RANK", "MASTER_PORT",
            "CUDA_VISIBLE_DEVICES")


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> int:
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("gloo")
    t = torch.tensor([rank + 1])
    if world > 1:
        dist.all_reduce(t)
    total = int(t.item())
    side = Path(cfg.side_dir)
    side.mkdir(parents=True, exist_ok=True)
    run = os.environ.get("MFCL_SWEEP_RUN_ID", "norun")
    record = {
        "run_id": run, "rank": rank, "world": world, "all_reduce": total, "value": cfg.value,
        "env": {k: v for k, v in os.environ.items() if k.startswith("MFCL_") or k in SEEN_ENV},
        "output_dir": HydraConfig.get().runtime.output_dir, "cwd": os.getcwd(), "pid": os.getpid(), "t": time.time(),
    }
    (side / f"{run}.rank{rank}.json").write_text(json.dumps(record))
    if cfg.fail_rank == rank:
        raise ValueError(f"rank {rank} fails on purpose")
    time.sleep(float(cfg.seconds))
    if world > 1:
        dist.destroy_process_group()
    return total


if __name__ == "__main__":
    main()
