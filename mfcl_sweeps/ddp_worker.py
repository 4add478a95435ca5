"""`python -m mfcl_sweeps.ddp_worker`: one rank of a torchrun job; a stable path that
submitted scripts and queued jobs name. The code lives in `mfcl_sweeps.job.ddp_worker`."""
import sys

from mfcl_sweeps.job.ddp_worker import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
