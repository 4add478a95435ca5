"""`hydra/launcher=mfcl_ssh`: a pool of SSH hosts with sync checks, health, failover and result
collection. The work lives in `mfcl_sweeps.backends.ssh.backend`; see docs/ssh.md."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import CommonLauncherConf, MfclLauncherBase


@dataclass
class SshLauncherConf(CommonLauncherConf):
    _target_: str = "hydra_plugins.mfcl_sweeps.ssh_launcher.MfclSshLauncher"
    # entries {host, port, user, slots, python, workdir, env, weight, name, ssh_options} or "user@host:port:slots"
    hosts: List[Any] = field(default_factory=list)
    strategy: str = "least_loaded"  # least_loaded | round_robin | random | weighted
    sync: str = "check"  # check (git commit must match) | rsync (copy the project first) | none
    allow_out_of_sync: bool = False
    python: str = "python3"  # default for hosts without their own
    workdir: Optional[str] = None  # default for hosts without their own
    env: Dict[str, str] = field(default_factory=dict)
    project_dir: Optional[str] = None  # local project root; default: git top level of the cwd
    identity_file: Optional[str] = None
    known_hosts_file: Optional[str] = None
    ssh_options: List[str] = field(default_factory=list)  # extra `-o` values, e.g. [ProxyJump=bastion]
    ssh_command: str = "ssh"
    multiplex: bool = True
    control_persist_s: int = 60
    connect_timeout_s: int = 10
    timeout: Optional[float] = None  # seconds per job
    kill_grace_s: float = 5.0
    max_consecutive_failures: int = 3
    max_failure_rate: float = 0.4
    min_jobs_for_rate: int = 5
    health_check_interval_s: float = 30.0
    dead_after_s: float = 60.0
    all_down_timeout_s: float = 120.0
    seed: Optional[int] = None


class MfclSshLauncher(MfclLauncherBase):
    backend_name = "ssh"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_ssh", node=SshLauncherConf, provider="mfcl_sweeps")
