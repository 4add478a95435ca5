"""`notify` options of the mfcl sweeper (`hydra.sweeper.notify.*`) and callback; the work is in
`mfcl_sweeps.notify`. Secrets are never options: the options name the env vars holding them."""

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class NotifyEmailConf:
    to: List[str] = field(default_factory=list)  # recipients; empty: no email
    sender: Optional[str] = None  # From:
    host: str = "localhost"
    port: int = 587
    starttls: bool = True
    user_env: Optional[str] = None  # env var holding the SMTP login
    password_env: Optional[str] = None  # env var holding the SMTP password
    ca_file: Optional[str] = None  # a private CA for the server's certificate


@dataclass
class NotifyConf:
    webhook_env: Optional[str] = None  # env var holding a Slack-compatible webhook URL
    email: NotifyEmailConf = field(default_factory=NotifyEmailConf)
    on: List[str] = field(default_factory=lambda: ["end", "failure"])
    metric: str = "accuracy"  # the end message names the best run by this metric
    title: str = "mfcl sweep"
