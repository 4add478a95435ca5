"""`hydra.sweeper.dry_run=true`: the runs, and what an mfcl launcher would submit for them,
printed; nothing is launched or written."""
from __future__ import annotations

from typing import Any

from mfcl_sweeps.duplicates import unique_runs
from mfcl_sweeps.expand import make_run_id

# the launcher's commands name the session and job files a launch writes first: say so, rather
# than print commands that look ready to paste but point at files that do not exist
ILLUSTRATIVE = ("# illustrative, not runnable as printed: a launch first writes the session and job files "
                "these commands name (a dry run writes nothing)")


def print_dry_run(spec: Any, total: int, repeats: int, launcher: Any, sweep_id: str) -> None:
    print(f"mfcl dry run: {total} run(s); nothing launched")
    runs = [r.with_identity(r.position, make_run_id(r.position, r.group, r.combo)) for r in unique_runs(spec, repeats)]
    for run in runs:
        print(f"{run.index:>6}  {run.run_id}  {run.config_hash}  {' '.join(run.overrides)}")
    if hasattr(launcher, "describe") and runs:
        print(ILLUSTRATIVE)
        print(launcher.describe(runs, sweep_id=sweep_id))
