#!/usr/bin/env bash
# The project's test command, defined here once: the README cites it and .ci/run calls it.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not slurm"`).
# Slurm and SSH tests need scripts/slurm-test-cluster.sh and scripts/ssh-test-hosts.sh
# running; without them they are skipped, and with CI=true they fail.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The fault-injection run kills drivers at random points: 2 trials per signal here (CI's subset,
# still every phase of a sweep in each test); the long run is
# `MFCL_FAULT_TRIALS=20 python -m pytest -m slow tests/test_fault_injection.py`.
export MFCL_FAULT_TRIALS="${MFCL_FAULT_TRIALS:-2}"
python -m pytest -q -p no:randomly --durations=20 tests "$@"
rc=$?
# pytest exits 5 when it collected nothing: a suite that tests nothing is not a pass.
if ((rc == 5)); then
    echo "scripts/test.sh: pytest collected no tests" >&2
    exit 1
fi
exit $rc
