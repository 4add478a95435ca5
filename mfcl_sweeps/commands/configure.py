"""`mfcl-sweeps configure [--app train.py] [--out sweeps/sweep.yaml]`: build a sweep file in a
keyboard-driven terminal UI over the app's composed config, with the run count updated live."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mfcl_sweeps.errors import MfclError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", help="the @hydra.main script (default: the only one, or the shallowest, "
                                      "under the current dir)")
    parser.add_argument("--out", default="sweeps/sweep.yaml", help="sweep file to write (default sweeps/sweep.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite --out without asking")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="overrides to compose the config with (e.g. model=mlp_large), as the app would take them")


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.project import scan as project_scan
    from mfcl_sweeps.project.configure_model import Builder
    from mfcl_sweeps.project.configure_tui import ConfigureScreen, run_screen

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise MfclError("configure needs a terminal (stdin and stdout); to write a sweep file without one, "
                        "use `mfcl-sweeps init` or docs/sweep-files.md")
    root = Path.cwd()
    if args.app:
        app = project_scan.read_app(Path(args.app))
        if app is None:
            raise MfclError(f"--app {args.app}: no @hydra.main function found in it")
    else:
        apps = project_scan.find_apps(root)
        if not apps:
            raise MfclError(f"no @hydra.main script under {root}: give --app PATH")
        app = apps[0]
    if app.config_dir is None or app.config_name is None:
        raise MfclError(f"{args.app or app.script}: @hydra.main names no config_path/config_name to compose")
    try:
        cfg, choices = project_scan.compose_app(app, tuple(args.overrides))
    except Exception as err:  # Hydra's composition errors are the user's config or overrides
        raise MfclError(f"cannot compose {app.config_name} from {app.config_dir}: {str(err).splitlines()[0]}") from None
    builder = Builder(leaves=project_scan.leaf_values(cfg), groups=project_scan.config_groups(app.config_dir),
                      choices=choices)
    script = os.path.relpath(app.script, root)
    try:
        saved = run_screen(ConfigureScreen(builder, script, Path(args.out), force=args.force))
    except KeyboardInterrupt:
        saved = None
    if saved is None:
        print("configure: nothing saved")
        return 1
    print(f"saved {saved}\n  mfcl-sweeps count {saved}\n"
          f"  python {script} --multirun hydra/sweeper=mfcl hydra.sweeper.sweep_file={saved}")
    return 0
