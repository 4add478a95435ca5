"""Running commands on one host: the system `ssh` client over a shared (multiplexed) connection,
or `sh -c` for the local host. Every call goes through the builders in `ssh_commands`."""
from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from typing import IO, Optional

from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import HostSpec, SshOptions
from mfcl_sweeps.errors import MfclError

SSH_FAILED = 255  # ssh's own exit code: connection or authentication failed


class HostKeyError(MfclError):
    """ssh refused the host's key (unknown or changed)."""


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def host_key_message(host: HostSpec, opts: SshOptions, err: str) -> Optional[str]:
    """A clear one-line error when ssh's stderr says the host key was refused."""
    if "Host key verification failed" not in err and "REMOTE HOST IDENTIFICATION HAS CHANGED" not in err:
        return None
    port = f"-p {host.port} " if host.port else ""
    where = opts.known_hosts_file or "~/.ssh/known_hosts"
    changed = "has CHANGED" if "CHANGED" in err else "is not known"
    return (f"ssh host {host.describe()} ({host.label}): its host key {changed}, so ssh refused it; check the "
            f"key's fingerprint, then add it with `ssh-keyscan {port}{host.host} >> {where}` "
            "(or set hydra.launcher.known_hosts_file); host-key checking stays on")


def unpack_tar(data: bytes, dest: str) -> Optional[str]:
    """A host's tar stream unpacked into `dest` (no member lands outside it, none keeps its owner);
    the error, or None. In-process where this Python has tarfile's "data" filter (3.10.12+,
    3.11.4+), else the system tar, which refuses the same escapes."""
    if hasattr(tarfile, "data_filter"):
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                tf.extractall(dest, filter="data")
        except (tarfile.TarError, OSError) as err:
            return str(err)
        return None
    p = subprocess.run(["tar", "-xf", "-", "--no-same-owner", "-C", dest], input=data, capture_output=True)
    return (p.stderr.decode(errors="replace").strip() or f"tar exit code {p.returncode}") if p.returncode else None


class HostConn:
    def __init__(self, host: HostSpec, opts: SshOptions, control_dir: Optional[str]) -> None:
        self.host, self.opts, self.control_dir = host, opts, control_dir

    def argv(self, script: str, *, multiplex: bool = True) -> list[str]:
        return cmd.host_argv(self.opts, self.host, self.control_dir, script, multiplex=multiplex)

    def run(self, script: str, *, input: Optional[bytes] = None, timeout: Optional[float] = None,
            multiplex: bool = True) -> Result:
        """Run a shell line; a timeout or a missing client reads as ssh's own failure (255)."""
        try:
            p = subprocess.run(self.argv(script, multiplex=multiplex), input=input, capture_output=True,
                               timeout=timeout or self.opts.connect_timeout_s + 30,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Result(SSH_FAILED, b"", f"timed out running {script[:80]!r}")
        except OSError as err:
            return Result(SSH_FAILED, b"", str(err))
        return Result(p.returncode, p.stdout, p.stderr.decode(errors="replace"))

    def check_host_key(self, res: Result) -> None:
        msg = host_key_message(self.host, self.opts, res.err)
        if msg:
            raise HostKeyError(msg)

    def start(self, script: str, out: IO[bytes]) -> subprocess.Popen:
        """A long-running command: stdin kept open (closing it stops the job), stdout to `out`,
        stderr piped (the supervisor's pid/exit lines, ssh's own messages)."""
        return subprocess.Popen(self.argv(script), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE,
                                start_new_session=True)

    def channel(self, script: str) -> subprocess.Popen:
        """A long-running command spoken to through pipes (stdin, stdout and stderr)."""
        return subprocess.Popen(self.argv(script), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)

    def fetch_dir(self, remote: str, local: str) -> Result:
        """Copy a remote directory's content into `local` (created) as a tar stream."""
        import os

        os.makedirs(local, exist_ok=True)
        try:
            src = subprocess.Popen(self.argv(cmd.tar_out_script(remote)), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            dst = subprocess.run(["tar", "-xf", "-", "--no-same-owner", "-C", local], stdin=src.stdout,
                                 capture_output=True, timeout=3600)
            src.stdout.close()
            err = src.stderr.read().decode(errors="replace")
            src.wait()
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Result(SSH_FAILED, b"", str(exc))
        if src.returncode:
            return Result(src.returncode, b"", err)
        return Result(dst.returncode, b"", dst.stderr.decode(errors="replace"))

    def close(self) -> None:
        if self.host.is_local or not (self.opts.multiplex and self.control_dir):
            return
        try:
            subprocess.run(cmd.control_exit_argv(self.opts, self.host, self.control_dir), capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
