"""Launcher options: declared once (mfcl_sweeps.config), checked once (mfcl_sweeps.options), with
one wording for every launcher, at setup, before anything is written."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from apprun import run_app

from mfcl_sweeps import backends, config
from mfcl_sweeps.errors import OptionError
from mfcl_sweeps.options import COMMON_OPTIONS, options_type, parse_options

WORDING = re.compile(r"hydra\.launcher\.[\w.\[\]]+=.+: .+; .+")  # KEY=VALUE: why; what to change
LAUNCHERS = ["local", "torchrun", "slurm", "pbs", "ssh"]
VALID = {"ssh": {"hosts": ["localhost:1"]}}  # the least each launcher needs


def check(name: str, raw: dict) -> object:
    return backends.get(name).check_options({**VALID.get(name, {}), **raw})


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_refuses_an_unknown_key_naming_the_nearest(name: str) -> None:
    with pytest.raises(OptionError) as err:
        check(name, {"retriez": 2})
    message = str(err.value)
    assert message.startswith(f"hydra.launcher.retriez=2: not an option of mfcl_{name}; did you mean retries?")
    assert "\n" not in message


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_checks_the_common_options_in_one_wording(name: str) -> None:
    for raw in ({"retries": -1}, {"progress": "loud"}, {"launch_delay": -2}):
        with pytest.raises(OptionError) as err:
            check(name, raw)
        assert WORDING.fullmatch(str(err.value)), str(err.value)


@pytest.mark.parametrize("name, raw", [
    ("local", {"max_concurrent": 0}), ("local", {"start_method": "clone"}), ("local", {"timeout": -1}),
    ("torchrun", {"nnodes": 0}), ("torchrun", {"master_port": 70000}), ("torchrun", {"rdzv_endpoint": "h:0"}),
    ("torchrun", {"ssh_options": ["-oProxyCommand=x"]}), ("torchrun", {"hosts": ["a@b@c"]}),
    ("slurm", {"nodes": "two"}), ("slurm", {"poll_min_s": 20}), ("slurm", {"setup": ["a\nb"]}),
    ("pbs", {"dialect": "sge"}), ("pbs", {"priority": 5000}),
    ("ssh", {"strategy": "fastest"}), ("ssh", {"max_failure_rate": 2}), ("ssh", {"hosts": []}),
])
def test_a_bad_value_is_one_line_naming_key_value_and_fix(name: str, raw: dict) -> None:
    with pytest.raises(OptionError) as err:
        check(name, raw)
    message = str(err.value)
    key = next(iter(raw))
    assert message.startswith(f"hydra.launcher.{key}"), message
    assert "\n" not in message and ": " in message, message


def test_numbers_given_as_strings_are_coerced_and_a_fraction_is_not_an_integer() -> None:
    opts = check("slurm", {"nodes": "2", "timeout_min": "1.5", "cpus_per_task": 4.0})
    assert (opts.nodes, opts.timeout_min, opts.cpus_per_task) == (2, 1.5, 4)
    with pytest.raises(OptionError, match=r"hydra.launcher.nodes=1.5: must be an integer"):
        check("slurm", {"nodes": 1.5})
    with pytest.raises(OptionError, match=r"hydra.launcher.retries=True: must be an integer"):
        check("local", {"retries": True})


def test_options_are_the_config_less_what_the_driver_handles() -> None:
    for conf in (config.LocalLauncherConf, config.SlurmLauncherConf, config.SshLauncherConf):
        names = {f.name for f in dataclasses.fields(options_type(conf))}
        declared = {f.name for f in dataclasses.fields(conf)} - {"_target_", *COMMON_OPTIONS}
        assert names == declared
    # torchrun and ssh share one declaration of the ssh client options
    client = {f.name for f in dataclasses.fields(config.SshClientConf)}
    assert client <= {f.name for f in dataclasses.fields(config.TorchrunLauncherConf)}
    assert client <= {f.name for f in dataclasses.fields(config.SshLauncherConf)}


def test_a_hydra_interpolation_default_is_replaced_for_callers_without_hydra() -> None:
    assert parse_options(config.PbsLauncherConf, {}, "mfcl_pbs", job_name="mfcl").job_name == "mfcl"
    assert check("slurm", {}).name == "mfcl"


def test_a_bad_local_option_fails_at_setup_before_the_sweep_writes_anything(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "value=1,2",
                   "hydra.launcher.max_concurrent=0")
    assert proc.returncode != 0
    assert "hydra.launcher.max_concurrent=0: must be >= 1; set 1 or more\n" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep" / ".mfcl" / "journal").exists()
    assert not (tmp_path / "side").exists()  # no job started


def test_plugin_modules_hold_no_option_declarations() -> None:
    plugins = Path(__file__).parent.parent / "hydra_plugins" / "mfcl_sweeps"
    for name in LAUNCHERS:
        text = (plugins / f"{name}_launcher.py").read_text()
        assert "@dataclass" not in text and "from mfcl_sweeps.config import" in text, name
