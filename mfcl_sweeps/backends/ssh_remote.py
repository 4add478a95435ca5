"""`python -m mfcl_sweeps.backends.ssh_remote`: the job supervisor on an SSH host; a stable path that
submitted scripts and queued jobs name. The code lives in `mfcl_sweeps.backends.sshclient.remote`."""
import sys

from mfcl_sweeps.backends.sshclient.remote import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
