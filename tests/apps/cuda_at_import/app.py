"""An app that "initializes CUDA at import", as `DEVICE = "cuda" if torch.cuda.is_available() ...`
does: with FAKE_LIBCUDA set it loads that library, a stand-in named libcuda.so.1 (test double:
this machine has no GPU driver). Each job records the command line of the process it runs in."""
import ctypes
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

if os.environ.get("FAKE_LIBCUDA"):
    ctypes.CDLL(os.environ["FAKE_LIBCUDA"])


@hydra.main(version_base="1.3", config_path=None)
def main(cfg: DictConfig) -> None:
    side = Path(cfg.side_dir)
    side.mkdir(parents=True, exist_ok=True)
    cmdline = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    (side / f"{cfg.x}.txt").write_text(" ".join(a.decode() for a in cmdline if a))


if __name__ == "__main__":
    main()
