"""What a sweep records about where it ran: the command, the git state, the environment
(secrets redacted before anything is written, by mfcl_sweeps.secrets)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Mapping, Optional

from mfcl_sweeps.secrets import redact_argv as redacted_argv  # noqa: F401  (the one secrets policy)
from mfcl_sweeps.secrets import redact_env as redacted_env  # noqa: F401


def _version(dist: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def command_info() -> dict:
    """The exact invocation (interpreter options, script or -m module, arguments; secrets
    redacted) and versions, enough for `mfcl-sweeps resume` to run it again."""
    return {
        "argv": redacted_argv(getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]),
        "cwd": os.getcwd(),
        "python": sys.executable,
        "versions": {"mfcl_sweeps": _version("mfcl-sweeps"), "hydra": _version("hydra-core")},
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _git(cwd: str, *args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_info(cwd: Optional[str] = None) -> dict:
    """{commit, dirty, behind, upstream} of the repository holding `cwd`; commit is None
    outside a repository. `behind` counts commits of the upstream branch as last fetched
    (nothing is fetched here) missing from HEAD; None without an upstream."""
    cwd = cwd or os.getcwd()
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "behind": None, "upstream": None}
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    upstream = _git(cwd, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}")
    behind = _git(cwd, "rev-list", "--count", "HEAD..@{u}") if upstream else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "behind": int(behind) if behind else None, "upstream": upstream}


def check_git(info: Mapping, allow_behind: bool, *, required: bool = True) -> Optional[str]:
    """The reason to refuse launching, or None. Being behind the upstream means the runs would
    measure old code. That refuses only where `required` (claim workers, multi-cluster sweeps,
    hydra.sweeper.require_up_to_date=true: there two checkouts would split one sweep between two
    versions of the code); elsewhere, as a dirty tree, it is a warning (`git_warnings`)."""
    if info.get("behind") and required and not allow_behind:
        return (f"{_behind(info)}; pull first, or set hydra.sweeper.allow_behind=true to launch anyway")
    return None


def _behind(info: Mapping) -> str:
    return f"the project is {info['behind']} commit(s) behind {info.get('upstream')}"


def git_warnings(info: Mapping) -> list[str]:
    """What the caller logs about the checkout: uncommitted changes, commits not pulled."""
    out = []
    if info.get("dirty"):
        out.append(f"the git tree has uncommitted changes (recorded commit {str(info.get('commit'))[:12]} "
                   "does not describe the code that runs)")
    if info.get("behind"):
        out.append(f"{_behind(info)} (as last fetched); the runs measure this checkout's code")
    return out
