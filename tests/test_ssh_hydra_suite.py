"""Hydra's own launcher test suite on `mfcl_ssh`, through real sshd on 127.0.0.1.

The host's workdir differs from the local cwd (on loopback, the same path would hide a job that
used a local path where it should use its host's), and the job dirs the suite checks are the
copies collected back into the local sweep dir.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import LauncherTestSuite
from services import SSH_DIR, SSH_HOSTS, require_service

WORKDIR = Path("/tmp/mfcl-ssh-suite-workdir")
HOSTS = f"[{{host:127.0.0.1,port:{SSH_HOSTS.ports[0]},user:root,slots:2,workdir:{WORKDIR}}}]"
OVERRIDES = [f"hydra.launcher.hosts={HOSTS}", "hydra.launcher.sync=none", f"hydra.launcher.python={sys.executable}",
             f"hydra.launcher.identity_file={SSH_HOSTS.key}", f"hydra.launcher.known_hosts_file={SSH_DIR / 'known_hosts'}",
             "hydra.launcher.progress=log"]


def test_discovery() -> None:
    assert "MfclSshLauncher" in [p.__name__ for p in Plugins.instance().discover(Launcher)]


@pytest.fixture
def _ssh_host() -> None:
    require_service("ssh")
    WORKDIR.mkdir(exist_ok=True)
    assert WORKDIR != Path.cwd()


@pytest.mark.ssh
@pytest.mark.usefixtures("_ssh_host")
@pytest.mark.parametrize("launcher_name, overrides", [("mfcl_ssh", OVERRIDES)])
class TestMfclSshLauncher(LauncherTestSuite):
    pass
