"""mfcl_torchrun's node agents on other machines, over SSH (`hydra.launcher.hosts`).

Node i of a run starts on hosts[i] through the system ssh client, under the supervisor the SSH
launcher uses (`ssh_remote`): an agent dies with its connection, so a timeout, a cancel or the
driver's death stops every node. Nothing is staged: the hosts must share the sweep dir with the
driver (session, job file, rank 0's result, torchrun's error files), as nodes of a cluster share
a filesystem. `check_host` says what is missing before the first run starts on a host.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Any, Sequence

from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import (
    HostSpec,
    SshOptions,
    parse_host,
)
from mfcl_sweeps.errors import MfclError, OptionError

_SHORT = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d+))?$")


def parse_node_host(value: Any, key: str) -> HostSpec:
    """`[user@]host[:port]` (one agent per host and run, so no slots), or the SSH launcher's mapping."""
    if isinstance(value, str):
        m = _SHORT.match(value.strip())
        if not m:
            raise OptionError(f"{key}={value!r}: expected [user@]host[:port], e.g. gpu2 or me@10.0.0.2:2222")
        port = int(m.group("port")) if m.group("port") else None
        value = HostSpec(host=m.group("host"), user=m.group("user"), port=port)
    return parse_host(value, key)


def parse_hosts(options: Any) -> tuple[HostSpec, ...]:
    hosts = tuple(parse_node_host(h, f"hydra.launcher.hosts[{i}]") for i, h in enumerate(options.hosts))
    if hosts and options.node_rank is not None:
        raise OptionError(f"hydra.launcher.node_rank={options.node_rank} with hydra.launcher.hosts: hosts start every "
                        "node's agent from this driver; drop one of the two (node_rank is for one driver per node)")
    if hosts and options.pack_gpus:
        raise OptionError("hydra.launcher.pack_gpus=true with hydra.launcher.hosts: packing slices this machine's "
                        "GPUs; on hosts give each host's env a CUDA_VISIBLE_DEVICES instead")
    return hosts


def ssh_options(options: Any, hosts: Sequence[HostSpec]) -> SshOptions:
    """The torchrun launcher's ssh client options, in the SSH launcher's form."""
    return SshOptions(hosts=list(hosts), identity_file=options.identity_file, known_hosts_file=options.known_hosts_file,
                      ssh_options=list(options.ssh_options), ssh_command=options.ssh_command,
                      connect_timeout_s=options.connect_timeout_s, multiplex=False)


def workdir_of(host: HostSpec, options: Any) -> str:
    return host.workdir or options.workdir or os.getcwd()


def python_of(host: HostSpec, options: Any) -> str:
    return host.python or options.python or sys.executable


def remote_argv(ssh: SshOptions, host: HostSpec, *, workdir: str, python: str, agent_argv: Sequence[str],
                job_path: str, job_json: str, grace_s: float) -> list[str]:
    """`ssh HOST 'cd WORKDIR && exec python -m ...ssh_remote ... -- AGENT_ARGV'` (every word quoted)."""
    script = cmd.job_script(workdir=workdir, python=python, env=host.env, job_path=job_path, job_json=job_json,
                            grace_s=grace_s, worker_argv=agent_argv)
    return cmd.host_argv(ssh, host, None, script, multiplex=False)


def preflight_script(workdir: str, python: str, session_path: str) -> str:
    """Prints one word: ok, missing-workdir, no-session or no-python."""
    imports = shlex.join([*cmd.python_words(python), "-c", "import mfcl_sweeps, torch.distributed.run"])
    return (f"cd {cmd.quote_path(workdir)} 2>/dev/null || {{ echo missing-workdir; exit 0; }}; "
            f"test -r {shlex.quote(session_path)} || {{ echo no-session; exit 0; }}; "
            f"{imports} >/dev/null 2>&1 || {{ echo no-python; exit 0; }}; echo ok")


def check_host(ssh: SshOptions, host: HostSpec, index: int, *, workdir: str, python: str, session_path: str) -> None:
    """Raise a one-line MfclError saying what to change when `host` cannot run a node agent."""
    from mfcl_sweeps.backends.sshclient.transport import HostConn

    conn = HostConn(host, ssh, None)
    res = conn.run(preflight_script(workdir, python, session_path), multiplex=False)
    conn.check_host_key(res)
    where = f"hydra.launcher.hosts[{index}] ({host.describe()})"
    words = res.out.decode(errors="replace").split()
    if not res.ok or not words:
        last = (res.err.strip().splitlines() or [f"exit code {res.code}"])[-1]
        raise MfclError(f"{where}: ssh failed: {last}; check the host name, port, user and "
                        "hydra.launcher.identity_file / known_hosts_file")
    problems = {
        "missing-workdir": f"has no directory {workdir}; set hydra.launcher.workdir or the host's workdir",
        "no-session": f"cannot read {session_path}: hosts must share the sweep dir with the driver; "
                      "set hydra.sweep.dir to a path on a shared filesystem",
        "no-python": f"`{python}` cannot import mfcl_sweeps and torch there; install them or set the host's python",
    }
    if words[-1] != "ok":
        raise MfclError(f"{where} {problems.get(words[-1], 'failed its check: ' + words[-1])}")
