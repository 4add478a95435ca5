"""A per-job supervisor: no process a job starts outlives the job or its driver, whatever signal
ends the driver (SIGKILL included).

A parent-death signal reaches only a direct child, and a kill of a process group only the
processes that stayed in it: a task's own subprocess (a data loader, a shell, a server) would
survive a killed driver and race the rerun. So every local job runs under a small supervisor,
forked from the driver, that

- leads the job's session and process group (`mfcl-sweeps cancel` signals that group);
- is the child subreaper of everything below it: a grandchild that double-forks or calls
  `setsid` is re-parented to it, not to init, so it stays findable;
- gets SIGTERM when the driver dies (parent-death signal), and the job gets SIGKILL when the
  supervisor dies;
- on SIGTERM/SIGINT/SIGHUP sends SIGTERM to every process below it and SIGKILL after the grace
  period; on SIGUSR1 (a timeout) SIGKILL at once; when the job ends, SIGKILL to whatever it left;
- exits with the job's own status (the same code, or killed by the same signal).

Linux only (prctl, /proc); elsewhere the supervisor still reaps and forwards, without the
re-parenting.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Callable, NoReturn, Optional

from mfcl_sweeps.liveness import proc_stat

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
GRACEFUL = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WATCHED = {*GRACEFUL, signal.SIGUSR1, signal.SIGCHLD}


def prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies."""
    prctl(_PR_SET_PDEATHSIG, sig)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live, non-zombie process."""
    out = {}
    for name in os.listdir("/proc"):
        fields = proc_stat(int(name)) if name.isdigit() else None
        if fields is not None and fields[0] != b"Z":
            out[int(name)] = int(fields[1])
    return out


def descendants(root: int) -> list[int]:
    """Live processes below `root`."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal_tree(sig: int) -> bool:
    """Send `sig` to every process below this one; True if there was any."""
    pids = descendants(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return bool(pids)


def _reap(job: int, status: Optional[int]) -> tuple[Optional[int], bool]:
    """Reap every ended child: (the job's wait status once known, whether any child is left)."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status, False
        if pid == 0:
            return status, True
        if pid == job:
            status = st


def _exit_like(status: int) -> NoReturn:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that does not kill (e.g. SIGCHLD): say which anyway
    os._exit(os.waitstatus_to_exitcode(status))


def supervise(start_job: Callable[[], NoReturn], *, grace_s: float, parent: int) -> NoReturn:
    """Run in the freshly forked supervisor, with the stop signals blocked (the driver blocks them
    around fork, so a signal that lands meanwhile is handled by the driver, never lost).
    `start_job` runs in the job's own process and must not return (exec or os._exit)."""
    try:
        os.setsid()
    except PermissionError:  # already leads a session (started with start_new_session)
        pass
    prctl(_PR_SET_CHILD_SUBREAPER, 1)
    die_with_parent(signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    job = os.fork()
    if job == 0:
        try:
            die_with_parent(signal.SIGKILL)
            for sig in WATCHED:  # as in a fresh interpreter
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            start_job()
        finally:
            os._exit(127)
    status: Optional[int] = None
    deadline: Optional[float] = None
    stopping = os.getppid() != parent  # the driver died before we could ask to be told
    if stopping:
        _signal_tree(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
    while True:
        status, left = _reap(job, status)
        if status is not None and not left:
            _exit_like(status)
        killing = status is not None or (deadline is not None and time.monotonic() >= deadline)
        if killing:  # the job is gone (what it left behind is an orphan), or the grace period is over
            _signal_tree(signal.SIGKILL)
        wait = 0.05 if killing else 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        info = signal.sigtimedwait(WATCHED, max(wait, 0.0))
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGUSR1:
            deadline = time.monotonic()
        elif not stopping:
            stopping = True
            _signal_tree(signal.SIGTERM)
            deadline = time.monotonic() + grace_s


def main(argv: list[str]) -> NoReturn:
    """`python -m mfcl_sweeps.job.supervise GRACE_S PARENT_PID -- COMMAND...`: a command
    (a torchrun agent) under the supervisor, for backends that start commands, not forks."""
    grace_s, parent, sep, *command = argv
    if sep != "--" or not command:
        sys.exit("usage: python -m mfcl_sweeps.job.supervise GRACE_S PARENT_PID -- COMMAND...")
    supervise(lambda: os.execvp(command[0], command), grace_s=float(grace_s), parent=int(parent))


if __name__ == "__main__":
    main(sys.argv[1:])
