"""`mfcl-sweeps resume SWEEP_DIR [--run RUN_ID ...] [OVERRIDE...]`: run the sweep's recorded
command again on the same sweep dir with `hydra.sweeper.resume=skip_completed`, so only the
missing runs run; with `--run`, only the runs chosen, whatever their state
(`hydra.sweeper.only_runs`)."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Any, Optional, Sequence

from mfcl_sweeps.errors import ManifestError

# overrides resume sets; a recorded or user-given one for the same key is replaced
RESUME_KEYS = ("hydra.sweep.dir", "hydra.sweeper.resume", "hydra.sweeper.only_runs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="the sweep dir (holds .mfcl/journal.jsonl)")
    _options(parser)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="OVERRIDE",
                        help="extra overrides, e.g. hydra.sweeper.resume=rerun_failed_only")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the command; run nothing")
    parser.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                        help="run this run again whatever its state (a run id or config hash, as "
                             "`mfcl-sweeps status --json` shows them); repeat for several")


def _late_options(args: argparse.Namespace) -> None:
    """--options given after an override (argparse leaves them among the overrides)."""
    late = argparse.ArgumentParser(add_help=False)
    _options(late)
    found, args.overrides = late.parse_known_args(args.overrides)
    args.dry_run, args.run = args.dry_run or found.dry_run, [*args.run, *found.run]


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~") if "=" in arg else ""


def foreign_sweeper(plan_op: dict) -> Optional[str]:
    """The sweeper of a sweep that only the mfcl callback recorded (BasicSweeper, Optuna...), else None."""
    sweeper = (plan_op.get("spec") or {}).get("sweeper")
    return sweeper if sweeper and "mfcl" not in str(sweeper) else None


def resume_command(snapshot: dict, extra: Sequence[str] = (), *, foreign: Optional[str] = None) -> list[str]:
    """The recorded command (interpreter, its options, script or module, arguments) pointed at
    the snapshot's sweep dir, resuming; `extra` overrides win over recorded ones. Under a
    `foreign` sweeper, which has no resume option, just pointed at the sweep dir."""
    from mfcl_sweeps.spec.overrides import quote_override_value

    command = snapshot.get("command") or {}
    if not command.get("argv") or not command.get("python"):
        raise ManifestError(f"{snapshot.get('sweep_dir')}: no recorded command to resume "
                            "(only sweeps run with hydra/sweeper=mfcl record one)")
    ours = [f"hydra.sweep.dir={quote_override_value(snapshot['sweep_dir'])}"]
    ours += [] if foreign else ["hydra.sweeper.resume=skip_completed"]
    given = {k for k in map(_key, extra) if k}
    kept = [a for a in command["argv"] if _key(a) not in given | set(RESUME_KEYS)]
    ours = [a for a in ours if _key(a) not in given]
    kept = restore_secrets(kept, snapshot.get("sweep_dir"))
    return [command["python"], *kept, *ours, *extra]


def chosen_runs(manifest: Any, wanted: Sequence[str]) -> str:
    """`hydra.sweeper.only_runs=[...]` for the runs given by run id or config hash; one that
    is no run of the journal is an error before anything runs."""
    known = {key for rec in manifest.records().values() for key in (rec.run_id, rec.config_hash) if key}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ManifestError(f"--run {unknown[0]}: no such run in {manifest.sweep_dir} (give a run id or config "
                            f"hash as `mfcl-sweeps status {manifest.sweep_dir} --json` shows them)")
    return "hydra.sweeper.only_runs=[" + ",".join(f"'{w}'" for w in dict.fromkeys(wanted)) + "]"


def restore_secrets(args: Sequence[str], sweep_dir: Any) -> list[str]:
    """The recorded arguments with each redacted secret (`db.password=***`) given again: from
    $MFCL_SECRET_<KEY> (`MFCL_SECRET_DB_PASSWORD`), else asked for on the terminal."""
    import getpass
    import os

    from mfcl_sweeps.secrets import REDACTED, env_name_for, redacted_keys
    from mfcl_sweeps.spec.overrides import quote_override_value

    out = list(args)
    for key in redacted_keys(args):
        var = env_name_for(key)
        value = os.environ.get(var)
        if value is None and sys.stdin.isatty():
            value = getpass.getpass(f"{key} (redacted in the recorded command): ")
        if not value:
            raise ManifestError(f"the recorded command holds a redacted secret ({key}); give it again: {var}=... "
                                f"mfcl-sweeps resume {sweep_dir}, or mfcl-sweeps resume {sweep_dir} {key}=VALUE")
        out = [a.replace(f"{key}={REDACTED}", f"{key}={quote_override_value(value)}", 1)
               if a.lstrip("+~").startswith(f"{key}=") else a for a in out]
    return out


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.commands.status import open_manifest
    from mfcl_sweeps.secrets import redact_argv

    _late_options(args)
    manifest = open_manifest(args.sweep_dir)
    plans = manifest.plans()
    recorded = {"sweep_dir": manifest.sweep_dir, "command": plans[-1].op.get("command") if plans else None}
    foreign = foreign_sweeper(plans[-1].op) if plans else None
    if foreign and args.run:
        raise ManifestError(f"--run: this sweep ran under {foreign}, which cannot run chosen runs; "
                            "run it with hydra/sweeper=mfcl to choose runs")
    extra = [*args.overrides, *([chosen_runs(manifest, args.run)] if args.run else [])]
    cmd = resume_command(recorded, extra, foreign=foreign)
    cwd = recorded["command"].get("cwd") or None
    if foreign:
        print(f"note: this sweep ran under {foreign.rsplit('.', 1)[-1]}, which skips nothing: every run runs "
              "again in the same sweep dir (add hydra/sweeper=mfcl to skip completed runs)", file=sys.stderr)
    print(f"(cd {shlex.quote(cwd or '.')} && {shlex.join(redact_argv(cmd))})", flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd, cwd=cwd)
