"""Pure builders of every command the SSH launcher runs: ssh/rsync argv and the POSIX shell
lines executed on a host. Nothing here runs anything.

Every value that reaches a shell goes through `shlex.quote`; override values never reach one
at all (they travel inside the job JSON, itself one quoted word).
"""
from __future__ import annotations

import os
import shlex
from typing import Optional, Sequence

from mfcl_sweeps.backends.sshclient.hosts import HostSpec, SshOptions
from mfcl_sweeps.backends.sshclient.remote import EXIT_MARK, PID_MARK  # noqa: F401 (the supervisor's protocol)

REMOTE_DIR = ".mfcl-remote"  # under each host's workdir; never synced, never deleted by rsync


def quote_path(path: str) -> str:
    """A remote path for the shell, keeping a leading `~/` expandable."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def python_words(python: str) -> list[str]:
    """`python` may be a command line (`conda run -n env python`), split as a shell would."""
    return shlex.split(python)


def ssh_base(opts: SshOptions, host: HostSpec, control_dir: Optional[str], *, multiplex: bool = True) -> list[str]:
    """`ssh` with every option but the destination. Host-key checking is left to ssh and the
    user's config (BatchMode only turns a would-be prompt into a refusal)."""
    argv = [opts.ssh_command, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={opts.connect_timeout_s}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
    if multiplex and opts.multiplex and control_dir:
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPersist={opts.control_persist_s}",
                 "-o", f"ControlPath={control_dir}/%C"]
    else:
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    if host.port:
        argv += ["-p", str(host.port)]
    if opts.identity_file:
        argv += ["-i", opts.identity_file]
    if opts.known_hosts_file:
        argv += ["-o", f"UserKnownHostsFile={opts.known_hosts_file}"]
    for opt in [*opts.ssh_options, *host.ssh_options]:
        argv += ["-o", opt]
    return argv


def host_argv(opts: SshOptions, host: HostSpec, control_dir: Optional[str], script: str, *,
              multiplex: bool = True) -> list[str]:
    """Run one shell line on `host`: through ssh, or `sh -c` for the local host."""
    if host.is_local:
        return ["sh", "-c", script]
    return [*ssh_base(opts, host, control_dir, multiplex=multiplex), host.target, script]


def control_exit_argv(opts: SshOptions, host: HostSpec, control_dir: str) -> list[str]:
    return [*ssh_base(opts, host, control_dir), "-O", "exit", host.target]


def preflight_script(workdir: str, python: str) -> str:
    """Prints `workdir=<absolute>`, `commit=<HEAD or empty>`, `mfcl=ok|missing` (or `missing-workdir`)."""
    py = shlex.join([*python_words(python), "-c", "import mfcl_sweeps"])
    return (f"cd {quote_path(workdir)} 2>/dev/null || {{ echo missing-workdir; exit 0; }}; "
            'echo "workdir=$(pwd -P)"; echo "commit=$(git rev-parse HEAD 2>/dev/null)"; '
            f"if {py} >/dev/null 2>&1; then echo mfcl=ok; else echo mfcl=missing; fi")


def mkdir_script(path: str) -> str:
    return f"mkdir -p {quote_path(path)}"


def write_file_script(path: str) -> str:
    """Stdin to `path`, atomically (a reader never sees half a session)."""
    parent, tmp = shlex.quote(path.rsplit("/", 1)[0] or "/"), shlex.quote(path + ".tmp")
    return f"mkdir -p {parent} && cat > {tmp} && mv -f {tmp} {shlex.quote(path)}"


def _run_in(workdir: str, env: dict, words: list[str]) -> str:
    """`words` run in `workdir` with the host's env (exec: the channel's process is the program)."""
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return f"cd {shlex.quote(workdir)} && exec {shlex.join([*prefix, *words])}"


def job_script(*, workdir: str, python: str, env: dict, job_path: str, job_json: str, grace_s: float,
               worker_argv: Sequence[str]) -> str:
    """Start one job under the supervisor (`ssh_remote`) in `workdir`, with the host's env."""
    return _run_in(workdir, env, [*python_words(python), "-m", "mfcl_sweeps.backends.ssh_remote", "--grace",
                                  f"{grace_s:g}", job_path, job_json, "--", *worker_argv])


def agent_script(*, workdir: str, python: str, env: dict, grace_s: float) -> str:
    """Start the host's agent (`ssh_agent`) in `workdir`, with the host's env (its jobs inherit both)."""
    return _run_in(workdir, env, [*python_words(python), "-m", "mfcl_sweeps.backends.ssh_agent", "--grace",
                                  f"{grace_s:g}"])


def cat_script(path: str) -> str:
    return f"cat {shlex.quote(path)}"


def tar_out_script(path: str) -> str:
    return f"tar -C {shlex.quote(path)} -cf - ."


def group_alive_script(pgid: int) -> str:
    """Prints `alive` while any process of the job's group remains, else `gone`."""
    return f"if kill -0 -- -{int(pgid)} 2>/dev/null; then echo alive; else echo gone; fi"


def kill_group_script(pgid: int, grace_s: float) -> str:
    """TERM the group, KILL what is left after `grace_s`."""
    p = int(pgid)
    steps = max(1, int(grace_s * 5))
    return (f"kill -TERM -- -{p} 2>/dev/null || exit 0; i=0; while [ $i -lt {steps} ]; do "
            f"kill -0 -- -{p} 2>/dev/null || exit 0; sleep 0.2; i=$((i+1)); done; "
            f"kill -KILL -- -{p} 2>/dev/null; exit 0")


def rsync_argvs(opts: SshOptions, host: HostSpec, control_dir: Optional[str], local_dir: str, workdir: str,
                excludes: Sequence[str] = ()) -> list[list[str]]:
    """Copy the project to `workdir`, honouring .gitignore; the remote state dir survives --delete.

    Two passes: the tree by rsync's quick check (size + mtime), then `.git/` by checksum, since a
    ref rewritten within the same second at the same size would pass the quick check unchanged."""
    src, dst = local_dir.rstrip("/"), workdir.rstrip("/")
    remote = [] if host.is_local else ["-e", shlex.join(ssh_base(opts, host, control_dir))]
    prefix = "" if host.is_local else f"{host.target}:"
    tree = ["rsync", *remote, "-a", "--delete", f"--exclude=/{REMOTE_DIR}/", "--exclude=/.git/",
            *(f"--exclude={e}" for e in excludes), "--filter=:- .gitignore", f"{src}/", f"{prefix}{dst}/"]
    git = ["rsync", *remote, "-a", "--delete", "--checksum", f"{src}/.git/", f"{prefix}{dst}/.git/"]
    return [tree, git] if os.path.isdir(f"{src}/.git") else [tree]
