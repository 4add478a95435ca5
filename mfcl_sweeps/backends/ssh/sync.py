"""Before launching: is each host's copy of the project the one we run here?

`sync: check` compares `git rev-parse HEAD` in the host's workdir with the local project's;
`sync: rsync` first copies the project there (honouring .gitignore, .git included, so the check
then holds); `sync: none` only resolves the workdir. Also checks that the host's python can
import mfcl_sweeps in that workdir, since every job needs it.
"""
from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.transport import HostConn
from mfcl_sweeps.errors import MfclError

log = logging.getLogger(__name__)


class HostSetupError(MfclError):
    """A host cannot run this sweep as configured (out of sync, missing workdir or package)."""


class Unreachable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class Preflight:
    workdir: Optional[str]  # absolute on the host; None: it does not exist
    commit: str
    mfcl_ok: bool


def local_commit(project_dir: str) -> str:
    p = subprocess.run(["git", "-C", project_dir, "rev-parse", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def project_root(cwd: str) -> str:
    p = subprocess.run(["git", "-C", cwd, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else os.path.abspath(cwd)


def preflight(conn: HostConn, workdir: str, python: str) -> Preflight:
    res = conn.run(cmd.preflight_script(workdir, python))
    conn.check_host_key(res)
    if not res.ok:
        raise Unreachable(res.err.strip().splitlines()[-1] if res.err.strip() else f"exit code {res.code}")
    fields = dict(line.split("=", 1) for line in res.out.decode(errors="replace").splitlines() if "=" in line)
    return Preflight(workdir=fields.get("workdir"), commit=fields.get("commit", ""), mfcl_ok=fields.get("mfcl") == "ok")


def rsync_project(conn: HostConn, project_dir: str, workdir: str, excludes: list[str]) -> None:
    res = conn.run(cmd.mkdir_script(workdir))
    conn.check_host_key(res)
    if not res.ok:
        raise Unreachable(res.err.strip() or f"mkdir exit code {res.code}")
    for argv in cmd.rsync_argvs(conn.opts, conn.host, conn.control_dir, project_dir, workdir, excludes):
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode:
            raise HostSetupError(f"ssh host {conn.host.label}: rsync of {project_dir} to {workdir} failed "
                                 f"(exit {p.returncode}): "
                                 f"{p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}")


def prepare_host(conn: HostConn, *, mode: str, workdir: str, python: str, project_dir: str, commit: str,
                 allow_out_of_sync: bool, excludes: list[str]) -> str:
    """Sync/check one host; returns its absolute workdir. Raises Unreachable or HostSetupError."""
    label = conn.host.label
    if mode == "rsync":
        rsync_project(conn, project_dir, workdir, excludes)
    pf = preflight(conn, workdir, python)
    if pf.workdir is None:
        raise HostSetupError(f"ssh host {label}: workdir {workdir!r} does not exist there; create it (a checkout of "
                             "the project) or set hydra.launcher.sync=rsync to copy the project")
    if not pf.mfcl_ok:
        raise HostSetupError(f"ssh host {label}: `{python}` in {pf.workdir} cannot import mfcl_sweeps; install it "
                             "there (pip install mfcl-sweeps) or set the host's `python`")
    if mode != "none" and pf.commit != commit:
        msg = (f"ssh host {label}: {pf.workdir} is at commit {pf.commit or '(not a git checkout)'} but the local "
               f"project {project_dir} is at {commit or '(not a git checkout)'}; update it, set "
               "hydra.launcher.sync=rsync, or hydra.launcher.allow_out_of_sync=true")
        if not allow_out_of_sync:
            raise HostSetupError(msg)
        log.warning("%s (continuing: allow_out_of_sync=true)", msg)
    return pf.workdir
