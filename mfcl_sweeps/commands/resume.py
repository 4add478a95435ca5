"""`mfcl-sweeps resume SWEEP_DIR [OVERRIDE...]`: run the sweep's recorded command again on the
same sweep dir with `hydra.sweeper.resume=skip_completed`, so only the missing runs run."""
from __future__ import annotations

import argparse
import shlex
import subprocess
from typing import Sequence

from mfcl_sweeps.errors import ManifestError

# overrides resume sets; a recorded or user-given one for the same key is replaced
RESUME_KEYS = ("hydra.sweep.dir", "hydra.sweeper.resume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="the sweep dir (holds .mfcl/journal.jsonl)")
    parser.add_argument("overrides", nargs="*",
                        help="extra overrides, e.g. hydra.sweeper.resume=rerun_failed_only")
    parser.add_argument("--dry-run", action="store_true", help="print the command; run nothing")


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~") if "=" in arg else ""


def resume_command(snapshot: dict, extra: Sequence[str] = ()) -> list[str]:
    """The recorded command (interpreter, its options, script or module, arguments) pointed at
    the snapshot's sweep dir, resuming; `extra` overrides win over recorded ones."""
    from mfcl_sweeps.job.jobspec import quote_override_value
    from mfcl_sweeps.state.sysinfo import REDACTED

    command = snapshot.get("command") or {}
    if not command.get("argv") or not command.get("python"):
        raise ManifestError(f"{snapshot.get('sweep_dir')}: no recorded command to resume "
                            "(only sweeps run with hydra/sweeper=mfcl record one)")
    ours = [f"hydra.sweep.dir={quote_override_value(snapshot['sweep_dir'])}", "hydra.sweeper.resume=skip_completed"]
    given = {k for k in map(_key, extra) if k}
    kept = [a for a in command["argv"] if _key(a) not in given | set(RESUME_KEYS)]
    ours = [a for a in ours if _key(a) not in given]
    hidden = [a for a in kept if REDACTED in a]
    if hidden:
        raise ManifestError(f"the recorded command holds a redacted secret ({hidden[0]!r}); give it again: "
                            f"mfcl-sweeps resume {snapshot.get('sweep_dir')} KEY=VALUE")
    return [command["python"], *kept, *ours, *extra]


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.commands.status import open_manifest

    manifest = open_manifest(args.sweep_dir)
    plans = manifest.plans()
    recorded = {"sweep_dir": manifest.sweep_dir, "command": plans[-1].op.get("command") if plans else None}
    cmd = resume_command(recorded, args.overrides)
    cwd = recorded["command"].get("cwd") or None
    print(f"(cd {shlex.quote(cwd or '.')} && {shlex.join(cmd)})", flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd, cwd=cwd)
