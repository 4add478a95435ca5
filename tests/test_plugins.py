"""Hydra finds every mfcl plugin, and its start-up scan stays light."""
from pathlib import Path

from apprun import loaded_after
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper

PLUGIN_DIR = Path(__file__).parent.parent / "hydra_plugins" / "mfcl_sweeps"


def test_sweeper_and_launchers_are_discovered() -> None:
    sweepers = {p.__name__ for p in Plugins.instance().discover(Sweeper)}
    launchers = {p.__name__ for p in Plugins.instance().discover(Launcher)}
    assert "MfclSweeper" in sweepers
    assert "MfclLocalLauncher" in launchers


def test_scanned_modules_do_not_postpone_annotations() -> None:
    # Hydra's scanner executes public plugin modules without registering them in sys.modules;
    # a dataclass there cannot resolve postponed (string) annotations and start-up crashes.
    offenders = [p.name for p in PLUGIN_DIR.glob("[!_]*.py")
                 if any(line.startswith("from __future__ import") for line in p.read_text().splitlines())]
    assert offenders == []


def test_plugin_scan_imports_no_heavy_modules() -> None:
    heavy = ("torch", "pandas", "submitit", "matplotlib", "wandb", "rich", "jinja2", "mfcl_sweeps.sweeper")
    assert loaded_after("from hydra.core.plugins import Plugins; Plugins.instance()", heavy) == []
