"""`mfcl-sweeps complete SWEEP_DIR --sources SOURCES [--retry-failed]`: finish a sweep with other
sources than the ones it started on. Runs the sweep's recorded command again on the same sweep
dir with `hydra/launcher=mfcl_pool` and these sources (the recorded launcher and its options
dropped): completed runs are skipped, failed ones too unless --retry-failed, and runs a
scheduler still holds from the earlier launch are re-attached by job id, not submitted again
(docs/pool.md, "Finishing a sweep elsewhere")."""
from __future__ import annotations

import argparse
import shlex
import subprocess
from typing import Sequence

from mfcl_sweeps.commands.resume import _key, resume_command
from mfcl_sweeps.errors import MfclError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="the sweep dir (holds .mfcl/journal.jsonl)")
    parser.add_argument("--sources", required=True,
                        help="the pool's sources, e.g. 'local:4,ssh:gpu1:8,slurm:cluster:32' (docs/pool.md)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again too")
    parser.add_argument("overrides", nargs="*", help="more overrides, e.g. hydra.launcher.strategy=round_robin")
    parser.add_argument("--dry-run", action="store_true", help="print the command; run nothing")


def sources_override(sources: str) -> str:
    """`hydra.launcher.sources=[...]` from what the user typed, with or without brackets."""
    text = sources.strip()
    if not text.strip("[]").strip():
        raise MfclError(f"--sources={sources!r}: give at least one source, e.g. --sources local:4,slurm:cluster:32")
    return f"hydra.launcher.sources={text if text.startswith('[') else f'[{text}]'}"


def complete_command(recorded: dict, sources: str, retry_failed: bool, extra: Sequence[str] = ()) -> list[str]:
    """The recorded command without its launcher choice and options, on mfcl_pool with `sources`."""
    command = dict(recorded.get("command") or {})
    command["argv"] = [a for a in command.get("argv") or []
                       if not (_key(a) == "hydra/launcher" or _key(a).startswith("hydra.launcher."))]
    mode = "skip_completed" if retry_failed else "skip_finished"
    ours = ["hydra/launcher=mfcl_pool", sources_override(sources), f"hydra.sweeper.resume={mode}"]
    return resume_command({**recorded, "command": command}, [*ours, *extra])


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.commands.status import open_manifest
    from mfcl_sweeps.secrets import redact_argv

    manifest = open_manifest(args.sweep_dir)
    plans = manifest.plans()
    recorded = {"sweep_dir": manifest.sweep_dir, "command": plans[-1].op.get("command") if plans else None}
    cmd = complete_command(recorded, args.sources, args.retry_failed, args.overrides)
    cwd = (recorded["command"] or {}).get("cwd") or None
    print(f"(cd {shlex.quote(cwd or '.')} && {shlex.join(redact_argv(cmd))})", flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd, cwd=cwd)
