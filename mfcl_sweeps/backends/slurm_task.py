"""`python -m mfcl_sweeps.backends.slurm_task`: one Slurm array task; a stable path that
submitted scripts and queued jobs name. The code lives in `mfcl_sweeps.backends.slurm.task`."""
import sys

from mfcl_sweeps.backends.slurm.task import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
