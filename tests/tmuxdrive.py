"""Drive a terminal program in tmux (send-keys, capture-pane), as a user would over SSH."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from services import IN_CI


class Tmux:
    """One tmux server of its own (-L), one window running `command`."""

    def __init__(self, command: str, cwd: Path) -> None:
        if shutil.which("tmux") is None:
            message = "tmux is not installed (.ci/run installs it)"
            pytest.fail(message) if IN_CI else pytest.skip(message)
        self.socket = f"mfcl-test-{uuid.uuid4().hex[:8]}"
        env = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')} "
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", "-c", str(cwd), f"{env}{command}; sleep 60")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
