"""The SSH launcher's options and host list: parsed and checked once, before anything runs.

A host is given as a mapping `{host, port, user, slots, python, workdir, env, weight}` or in
short form `[user@]host[:port]:slots` (`gpu1:4`, `me@gpu1:2222:4`, `localhost:8`). `localhost`
without user or port runs on this machine through the same staging and collection path, with
`sh -c` where the others get `ssh`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from mfcl_sweeps.config import SshLauncherConf
from mfcl_sweeps.errors import OptionError
from mfcl_sweeps.options import options_type, ssh_option
from mfcl_sweeps.options import parse_options as parse_launcher_options


class SshConfigError(OptionError):
    """A `hydra.launcher.*` value of the SSH launcher is malformed (raised before anything runs)."""


@dataclass
class HostSpec:
    host: str
    port: Optional[int] = None  # None: ssh's own default (or ~/.ssh/config)
    user: Optional[str] = None
    slots: int = 1
    python: Optional[str] = None  # None: the launcher's `python`
    workdir: Optional[str] = None  # None: the launcher's `workdir` (localhost: the project dir)
    env: dict = field(default_factory=dict)
    weight: float = 1.0
    name: Optional[str] = None  # label in logs and the manifest; default host[_port]
    local: Optional[bool] = None  # None: True for a bare `localhost`
    ssh_options: list = field(default_factory=list)  # extra `-o` values for this host only

    @property
    def is_local(self) -> bool:
        if self.local is not None:
            return self.local
        return self.host == "localhost" and self.port is None and self.user is None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        return self.name or (f"{self.host}_{self.port}" if self.port else self.host)

    def describe(self) -> str:
        return f"{self.target}:{self.port}" if self.port else self.target


SshOptions = options_type(SshLauncherConf)  # declared, with their checks, in mfcl_sweeps.config


_SHORT = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d*))?(?::(?P<slots>\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_ssh_option(opt: Any, key: str) -> None:
    why = ssh_option(opt, {})
    if why:
        raise SshConfigError(f"{key}={opt!r}: {why}")


def parse_short(text: str, key: str) -> HostSpec:
    """`host`, `host:slots`, `host:port:slots` (port may be empty), each with an optional `user@`."""
    m = _SHORT.match(text.strip())
    if not m:
        raise SshConfigError(f"{key}={text!r}: expected [user@]host[:port]:slots, e.g. gpu1:4 or me@gpu1:2222:4")
    port, slots = m.group("port"), m.group("slots")
    if slots is None and port:  # `host:N` names slots, not a port
        port, slots = None, port
    return HostSpec(host=m.group("host"), user=m.group("user"), port=int(port) if port else None,
                    slots=int(slots) if slots else 1)


def parse_host(value: Any, key: str) -> HostSpec:
    if isinstance(value, HostSpec):
        spec = value
    elif isinstance(value, str):
        spec = parse_short(value, key)
    elif isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(HostSpec)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise SshConfigError(f"{key}.{unknown[0]}: unknown host key; expected one of {', '.join(sorted(known))}")
        if not value.get("host"):
            raise SshConfigError(f"{key}.host: missing; every host entry needs `host`")
        spec = HostSpec(**{k: v for k, v in value.items() if v is not None or k in ("port", "user")})
        spec.env = dict(spec.env or {})
        spec.ssh_options = list(spec.ssh_options or [])
    else:
        raise SshConfigError(f"{key}={value!r}: expected a mapping {{host, port, user, slots, ...}} "
                             "or 'user@host:port:slots'")
    if not isinstance(spec.slots, int) or spec.slots < 1:
        raise SshConfigError(f"{key}.slots={spec.slots!r}: expected a whole number >= 1")
    if spec.port is not None and not (isinstance(spec.port, int) and 0 < spec.port < 65536):
        raise SshConfigError(f"{key}.port={spec.port!r}: expected a TCP port number")
    if not isinstance(spec.weight, (int, float)) or spec.weight <= 0:
        raise SshConfigError(f"{key}.weight={spec.weight!r}: expected a number > 0")
    if spec.host.startswith("-"):
        raise SshConfigError(f"{key}.host={spec.host!r}: a host name cannot start with '-'")
    if not _NAME.match(spec.label):
        raise SshConfigError(f"{key}.name={spec.label!r}: use letters, digits, '.', '_' or '-' (it names log files)")
    for name in spec.env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(name)):
            raise SshConfigError(f"{key}.env.{name}: not a valid environment variable name")
    for opt in spec.ssh_options:
        check_ssh_option(opt, f"{key}.ssh_options")
    return spec


def parse_options(options: dict) -> SshOptions:
    """`hydra.launcher.*` of mfcl_ssh -> SshOptions with every host parsed (HostSpec)."""
    opts = parse_launcher_options(SshLauncherConf, options, "mfcl_ssh")
    hosts = [parse_host(h, f"hydra.launcher.hosts[{i}]") for i, h in enumerate(opts.hosts)]
    labels = [h.label for h in hosts]
    dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dupes:
        raise SshConfigError(f"hydra.launcher.hosts: {dupes[0]!r} is listed twice; give each entry a distinct "
                             "host/port or a distinct `name`")
    return dataclasses.replace(opts, hosts=hosts)


def check_workdirs(opts: SshOptions) -> None:
    """Every remote host needs to know where the project is (a local one runs in the project dir)."""
    for i, h in enumerate(opts.hosts):
        if not (h.workdir or opts.workdir or h.is_local):
            raise SshConfigError(f"hydra.launcher.hosts[{i}].workdir: missing for {h.label}; give the project's "
                                 "path on that host (or hydra.launcher.workdir for every host)")
