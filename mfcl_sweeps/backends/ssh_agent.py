"""`python -m mfcl_sweeps.backends.ssh_agent`: the SSH launcher's per-host agent (`hydra.launcher.agent`);
a stable path that the driver names. The code lives in `mfcl_sweeps.backends.sshclient.agent`."""
import sys

from mfcl_sweeps.backends.sshclient.agent import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
