"""`mfcl-sweeps init [DIR]`: detect the project (Hydra app, config dir and groups, Python env,
schedulers and their partitions/queues, GPUs), write `sweeps/example.yaml` and launcher presets
under `<config_dir>/hydra/launcher/`, and print the command to run.

Never overwrites a file that differs (`--force` does); running it twice changes nothing. It asks
questions only on a terminal without `--yes`; every answer has a flag.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

from mfcl_sweeps.errors import MfclError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="project root (default: the current dir)")
    parser.add_argument("--app", help="the @hydra.main script to use when there are several")
    parser.add_argument("--partition", help="Slurm partition for hydra/launcher=cluster (default: sinfo's default)")
    parser.add_argument("--queue", help="PBS queue (default: the first of qstat -Q)")
    parser.add_argument("--account", help="Slurm/PBS account")
    parser.add_argument("--time-min", type=int, default=60, help="time limit per run, minutes (default 60)")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs per node/run (default: 1 if nvidia-smi finds any)")
    parser.add_argument("--ssh-host", action="append", default=[], metavar="USER@HOST[:PORT][:SLOTS]",
                        help="an SSH host for hydra/launcher=ssh (repeat for more)")
    parser.add_argument("--ssh-workdir", help="the project's checkout on the SSH hosts")
    parser.add_argument("--yes", "-y", action="store_true", help="no questions: take the detected defaults")
    parser.add_argument("--force", action="store_true", help="overwrite files that differ")


def _pick_app(apps: list, root: Path, wanted: Optional[str], ask: Optional[Callable[[str], str]]):
    if not apps:
        raise MfclError(f"no @hydra.main script under {root}: run init in your project's root, or give DIR")
    if wanted:
        target = (root / wanted).resolve()
        match = [a for a in apps if a.script == target]
        if not match:
            found = ", ".join(str(a.script.relative_to(root)) for a in apps)
            raise MfclError(f"--app {wanted}: not a @hydra.main script under {root} (found: {found})")
        return match[0]
    if len(apps) == 1 or ask is None:
        return apps[0]
    for i, app in enumerate(apps, 1):
        print(f"  {i}. {app.script.relative_to(root)}")
    answer = ask(f"which app [1-{len(apps)}, default 1]: ").strip() or "1"
    if not answer.isdigit() or not 1 <= int(answer) <= len(apps):
        raise MfclError(f"app choice {answer!r}: answer a number from 1 to {len(apps)}")
    return apps[int(answer) - 1]


def _ask_default(ask: Optional[Callable[[str], str]], question: str, default: Optional[str]) -> Optional[str]:
    if ask is None:
        return default
    return ask(f"{question} [{default or 'none'}]: ").strip() or default


def write_files(files: dict[Path, str], force: bool) -> list[tuple[str, Path]]:
    """Write each file unless it exists; (what happened, path) per file."""
    done = []
    for path, text in files.items():
        existed = path.exists()
        if existed:
            same = path.read_text() == text
            if same or not force:
                done.append(("unchanged" if same else "kept (differs; --force overwrites)", path))
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        done.append(("overwritten" if existed else "created", path))
    return done


def _prefix(python: str) -> str:
    """How to call python in printed commands: plain `python` when it is the one on PATH."""
    import shutil

    on_path = shutil.which("python")
    return "python" if on_path and os.path.realpath(on_path) == os.path.realpath(python) else python


def plan(args: argparse.Namespace, ask: Optional[Callable[[str], str]]) -> tuple[dict[Path, str], list[str]]:
    """(files to write, lines to print)."""
    from mfcl_sweeps.project import init_files
    from mfcl_sweeps.project import scan as project_scan

    root = Path(args.dir).resolve()
    if not root.is_dir():
        raise MfclError(f"init {args.dir}: not a directory")
    scan = project_scan.scan(root)
    app = _pick_app(scan.apps, root, args.app, ask)
    script = app.script.relative_to(root)
    config = (f" (config: {os.path.relpath(app.config_dir, root)}/{app.config_name}.yaml)" if app.config_dir
              else " (no config_path)")
    report = [f"app: {script}{config}", f"python: {scan.python} ({scan.env_kind})"]
    groups = project_scan.config_groups(app.config_dir)
    leaves, choices, composed = {}, {}, False
    if app.config_dir and app.config_name:
        try:
            cfg, choices = project_scan.compose_app(app)
            leaves, composed = project_scan.leaf_values(cfg), True
        except Exception as err:  # e.g. a config the app registers in Python, or a broken one
            report.append(f"warning: {script}'s config does not compose without running it "
                          f"({str(err).splitlines()[0]}); the example sweep is one run: add your keys")
    report.append("config groups: " + (", ".join(f"{g} ({', '.join(o)})" for g, o in groups.items()) or "none"))
    report += [f"scheduler: {s.kind} ({s.submit}; {'partitions' if s.kind == 'slurm' else 'queues'}: "
               f"{', '.join(s.queues) or 'none found'})" for s in scan.schedulers] or ["scheduler: none on PATH"]
    report.append(f"GPUs: {'; '.join(scan.gpus) or 'none (no nvidia-smi)'}")

    kinds = {s.kind: s for s in scan.schedulers}
    p = init_files.Presets(timeout_min=args.time_min, account=args.account, ssh_hosts=list(args.ssh_host),
                           ssh_workdir=args.ssh_workdir,
                           gpus_per_node=args.gpus if args.gpus is not None else int(bool(scan.gpus)))
    if "slurm" in kinds:
        p.partition = _ask_default(ask, "Slurm partition", args.partition or kinds["slurm"].default_queue)
    if "pbs" in kinds:
        p.queue = _ask_default(ask, "PBS queue", args.queue or kinds["pbs"].default_queue)
    if kinds:
        p.account = _ask_default(ask, "account", p.account)
    if ask is not None and not p.ssh_hosts:
        answer = ask("SSH hosts for hydra/launcher=ssh (user@host[:port][:slots], comma-separated) [none]: ")
        p.ssh_hosts = [h.strip() for h in answer.split(",") if h.strip()]

    python = _prefix(scan.python)
    app_command = f"{python} {shlex.quote(str(script))}"
    sweep_rel = "sweeps/example.yaml"
    axes, seeds = init_files.example_axes(groups if composed else {}, choices, leaves)
    files = {root / sweep_rel: init_files.example_sweep(app_command, sweep_rel, axes, seeds)}
    names = list(init_files.presets(scan.schedulers, p, len(scan.gpus)).items())
    if app.config_dir:
        files.update({app.config_dir / "hydra" / "launcher" / f"{n}.yaml": t for n, t in names})
    launcher = "cluster" if kinds and app.config_dir else ("local" if app.config_dir else "mfcl_local")
    run = (f"{app_command} --multirun hydra/sweeper=mfcl hydra/launcher={launcher} "
           f"hydra.sweeper.sweep_file={sweep_rel} hydra/callbacks=mfcl")
    hint = [f"cd {shlex.quote(str(root))}" if root != Path.cwd().resolve() else None,
            f"mfcl-sweeps count {sweep_rel}", f"{run} hydra.sweeper.dry_run=true", run]
    return files, report + ["", "next:"] + [f"  {line}" for line in hint if line]


def run(args: argparse.Namespace) -> int:
    interactive = not args.yes and sys.stdin.isatty()
    try:
        files, lines = plan(args, input if interactive else None)
        print("\n".join(lines[:lines.index("")]))
        if interactive:
            for path in files:
                print(f"  will write {path}{' (exists)' if path.exists() else ''}")
            if (input("write these files? [Y/n] ").strip().lower() or "y") not in ("y", "yes"):
                print("nothing written")
                return 1
    except (KeyboardInterrupt, EOFError):
        print("\ninit: interrupted; nothing written", file=sys.stderr)
        return 130
    root = Path(args.dir).resolve()
    for what, path in write_files(files, args.force):
        print(f"{what:>10}: {os.path.relpath(path, root)}")
    print("\n".join(lines[lines.index(""):]))
    return 0
