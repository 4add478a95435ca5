"""One job run by its host's agent (`AgentChannel`) instead of over its own ssh channel.

The outcome rules are `RemoteJob`'s (exit code and result collected, or the channel lost and the
job re-sent once confirmed gone); only how the job starts, stops and reports differs: a start
request and a kill request on the host's channel, and events that the channel hands over.
"""
from __future__ import annotations

import os
import time
from typing import IO, Optional

from mfcl_sweeps.backends.base import JobState
from mfcl_sweeps.backends.ssh.agent_channel import AgentChannel
from mfcl_sweeps.backends.ssh.job import RemoteJob


class AgentJob(RemoteJob):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel: Optional[AgentChannel] = None
        self.agent_id: Optional[str] = None  # its id on the channel
        self._log: Optional[IO[bytes]] = None

    def start_on(self, channel: AgentChannel, job_path: str, job_json: str, argv: list[str]) -> None:
        req = self.request
        os.makedirs(os.path.dirname(req.log_path), exist_ok=True)
        self._log = open(req.log_path, "ab")
        self.channel = channel
        self.agent_id = channel.start(self, job_path=job_path, job_json=job_json, argv=argv,
                                      result_path=self.host.layout.result_path(req.run.run_id, req.spec.attempt))
        if self.agent_id is None:
            self.channel_lost(channel.lost or "the agent is gone", None, False)

    def wait_started(self, deadline: float) -> None:
        """Until the agent reports the job's pid (journaled at submit) or the job is over."""
        while not self._pid_seen.wait(0.05) and self.state is None and time.monotonic() < deadline:
            pass

    def stop(self, reason: str) -> None:
        """The agent kills the job's group (TERM, grace, KILL); its exit then comes as usual."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.channel is not None and self.agent_id is not None:
            self.channel.send(op="kill", id=self.agent_id)

    # -- events, from the channel's threads -----------------------------------------------
    def on_started(self, pid: int) -> None:
        self.pid = pid
        self._pid_seen.set()

    def on_output(self, data: bytes) -> None:
        if self._log is not None and not self._log.closed:
            self._log.write(data)
            self._log.flush()

    def could_not_start(self, error: str) -> None:
        self._pid_seen.set()
        self._finish(JobState(done=True, error=f"could not start on {self.host.label}: {error}",
                              fields={"host": self.host.label}), host_ok=False)

    def collected(self, ok: Optional[bool]) -> None:
        self._collected(ok)

    def collect_failed(self, exc: Exception) -> None:
        if self.state is None:
            self._finish(JobState(done=True, error=f"ssh launcher error: {exc!r}", fields={"host": self.host.label}),
                         host_ok=None)

    def channel_lost(self, detail: str, ssh_code: Optional[int], closing: bool) -> None:
        """The channel ended before this job's exit came back (or its result was collected)."""
        self._pid_seen.set()
        if closing and self.stop_reason is None:  # the launcher is closing: the agent stopped it
            self.stop_reason = "the launcher closed"
        self._ended_unreported(detail, ssh_code)

    def _finish(self, state: JobState, host_ok: Optional[bool]) -> None:
        if self._log is not None:
            self._log.close()
        super()._finish(state, host_ok)
