"""`python -m mfcl_sweeps.worker`: the job runner every backend starts; a stable path that
submitted scripts and queued jobs name. The code lives in `mfcl_sweeps.job.worker`."""
import sys

from mfcl_sweeps.job.worker import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
