"""Sweep notifications: a Slack-compatible webhook and/or email (SMTP with STARTTLS), sent when
the sweep ends, at its first failed run, and the moment every source (pool) or host (SSH launcher)
is down while the launch still waits for one (`hydra.sweeper.notify`, docs/first-ten-minutes.md).

Secrets never sit in the config: the webhook URL and the SMTP login are read from environment
variables named by the config, at send time, so neither `multirun.yaml` nor the manifest (which
records the command line) can hold them. A notification that cannot be sent is a warning: the
sweep's outcome never depends on it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from mfcl_sweeps import events, model
from mfcl_sweeps.errors import MfclError

log = logging.getLogger("mfcl_sweeps")

EVENTS = ("end", "failure", events.ALL_DOWN)
SEND_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 2.0
MAX_FAILURES_LISTED = 10
_KEYS = {"webhook_env", "email", "on", "metric", "title"}
_EMAIL_KEYS = {"to", "sender", "host", "port", "starttls", "user_env", "password_env", "ca_file"}


@dataclass(frozen=True)
class EmailTarget:
    to: tuple[str, ...]
    sender: str
    host: str = "localhost"
    port: int = 587
    starttls: bool = True
    user_env: Optional[str] = None  # names of env vars holding the login, never the login itself
    password_env: Optional[str] = None
    ca_file: Optional[str] = None  # a private CA for the server's certificate (default: the system's)


@dataclass(frozen=True)
class NotifyOptions:
    webhook_env: Optional[str] = None  # env var holding the webhook URL
    email: Optional[EmailTarget] = None
    on: tuple[str, ...] = EVENTS
    metric: str = "accuracy"  # the best run is the one with the best value of this metric
    title: str = "mfcl sweep"


@dataclass
class Summary:
    """What a notification says; built from the manifest's records."""
    event: str  # end | failure | stopped (the launch raised, e.g. every SSH host down)
    sweep_id: str
    sweep_dir: str
    counts: dict[str, int]
    failures: list[dict] = field(default_factory=list)  # {run_id, error}
    best: Optional[dict] = None  # {run_id, metric, value}
    report: Optional[str] = None
    error: Optional[str] = None  # why a stopped sweep stopped
    sources: list[dict] = field(default_factory=list)  # all_down: {name, reason} of each source or host
    wait_s: Optional[float] = None  # all_down: how long the launch waits for one to come back


def parse_options(raw: Any, where: str = "hydra.sweeper.notify") -> Optional[NotifyOptions]:
    """`hydra.sweeper.notify` (or the callback's, named by `where`) as a plain dict -> options;
    None when it names no target (no webhook_env, no email recipient)."""
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise MfclError(f"{where}={raw!r}: expected a mapping such as {{webhook_env: MFCL_SLACK_TOKEN}}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise MfclError(f"{where}.{sorted(unknown)[0]}: unknown key; use {', '.join(sorted(_KEYS))}")
    on = tuple(raw.get("on") or EVENTS)
    bad = [e for e in on if e not in EVENTS]
    if bad:
        raise MfclError(f"{where}.on: {bad[0]!r} is not an event; use {', '.join(EVENTS)}")
    email = {k: v for k, v in (raw.get("email") or {}).items() if v is not None}
    target = None
    if email.get("to"):
        unknown = set(email) - _EMAIL_KEYS
        if unknown:
            raise MfclError(f"{where}.email.{sorted(unknown)[0]}: unknown key; "
                            f"use {', '.join(sorted(_EMAIL_KEYS))}")
        if not email.get("sender"):
            raise MfclError(f"{where}.email.sender: required with email.to (the From: address)")
        if email.get("user_env") and email.get("starttls") is False:
            raise MfclError(f"{where}.email.user_env: a login needs starttls: true "
                            "(it would cross in clear)")
        to = email["to"] if isinstance(email["to"], (list, tuple)) else [email["to"]]
        target = EmailTarget(**{**email, "to": tuple(str(t) for t in to)})
    if not raw.get("webhook_env") and target is None:
        return None
    _check_secret_names(where, {"webhook_env": raw.get("webhook_env"),
                                "email.password_env": email.get("password_env")})
    return NotifyOptions(webhook_env=raw.get("webhook_env"), email=target, on=on,
                         metric=str(raw.get("metric") or "accuracy"), title=str(raw.get("title") or "mfcl sweep"))


def _check_secret_names(where: str, names: dict[str, Optional[str]]) -> None:
    """The manifest records the environment, hiding secret-looking names: a variable holding a
    secret must be one it hides, or the secret would be written there in clear."""
    from mfcl_sweeps.state.sysinfo import redacted_env

    for key, name in names.items():
        if name and redacted_env({name: "probe"})[name] == "probe":
            example = "MFCL_NOTIFY_TOKEN" if key == "webhook_env" else "MFCL_SMTP_PASSWORD"
            raise MfclError(f"{where}.{key}={name}: the manifest records the environment and would show this "
                            f"variable; name it like a secret (e.g. {example})")


# -- the message ------------------------------------------------------------------------------
def error_line(record: Any) -> str:
    """A failed run's error in one line: its recorded error, else the last line of its log."""
    for text in (record.error, record.stderr_tail):
        lines = [line for line in (text or "").strip().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return ""


def summarize(records: dict, sweep_id: str, sweep_dir: str, event: str) -> Summary:
    """Counts per state and the failed runs with their error line, from manifest records."""
    ordered = sorted(records.values(), key=lambda r: r.index)
    counts: dict[str, int] = {}
    for rec in ordered:
        counts[rec.status] = counts.get(rec.status, 0) + 1
    counts["total"] = len(ordered)
    failures = [{"run_id": r.run_id, "error": error_line(r)} for r in ordered if r.status == model.FAILED]
    return Summary(event=event, sweep_id=sweep_id, sweep_dir=sweep_dir, counts=counts, failures=failures)


def best_run(records: dict, metric: str) -> Optional[dict]:
    """The completed run with the best value of `metric` in its return value (a number, or that
    key of a dict), lower being better for losses, as in the report; None when none has it."""
    from mfcl_sweeps.aggregate import lower_is_better, parse_return_value

    scored = []
    for r in records.values():
        value = parse_return_value(r.return_value) if r.status == model.COMPLETED else None
        value = value.get(metric) if isinstance(value, dict) else value
        if value is not None and value == value:  # not NaN
            scored.append((value, r.index, r.run_id))
    if not scored:
        return None
    sign = 1 if lower_is_better(metric) else -1
    value, _, run_id = min(scored, key=lambda t: (sign * t[0], t[1]))  # ties: the lowest index
    return {"run_id": run_id, "metric": metric, "value": value}


def text_of(s: Summary, title: str) -> str:
    head = {"end": "finished", "failure": "has its first failed run", "stopped": f"stopped: {s.error}",
            events.ALL_DOWN: f"has every source down; it stops in {s.wait_s or 0:g}s unless one comes back",
            }[s.event]
    counts = ", ".join(f"{v} {k}" for k, v in s.counts.items() if k != "total")
    lines = [f"{title} {s.sweep_id} {head}: {s.counts.get('total', 0)} run(s): {counts or 'none'}"]
    lines += [f"  down {src['name']}: {src['reason']}" for src in s.sources]
    for f in s.failures[:MAX_FAILURES_LISTED]:
        lines.append(f"  failed {f['run_id']}: {f['error'] or '(no error line)'}")
    if len(s.failures) > MAX_FAILURES_LISTED:
        lines.append(f"  ... and {len(s.failures) - MAX_FAILURES_LISTED} more")
    if s.best:
        lines.append(f"best: {s.best['run_id']} ({s.best['metric']} = {s.best['value']:.6g})")
    lines.append(f"report: {s.report}" if s.report else f"status: mfcl-sweeps status {s.sweep_dir}")
    return "\n".join(lines)


def webhook_payload(s: Summary, title: str) -> dict:
    """Slack's incoming-webhook body (`text`) plus the same facts as fields for other receivers."""
    return {"text": text_of(s, title), "event": s.event, "sweep_id": s.sweep_id, "sweep_dir": s.sweep_dir,
            "counts": s.counts, "failures": s.failures[:MAX_FAILURES_LISTED], "best": s.best, "report": s.report,
            "error": s.error, "sources": s.sources, "wait_s": s.wait_s}


# -- sending ----------------------------------------------------------------------------------
def _env(name: Optional[str], what: str) -> Optional[str]:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise OSError(f"{what}: environment variable {name} is not set")
    return value


def send_webhook(url: str, payload: dict) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=SEND_TIMEOUT_S) as resp:
        resp.read()


def send_email(target: EmailTarget, subject: str, body: str) -> None:
    import smtplib
    import ssl
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject, target.sender, ", ".join(target.to)
    msg.set_content(body)
    user = _env(target.user_env, "notify.email.user_env")
    password = _env(target.password_env, "notify.email.password_env")
    with smtplib.SMTP(target.host, int(target.port), timeout=SEND_TIMEOUT_S) as smtp:
        if target.starttls:
            # smtplib's default context verifies nothing; a login must not go to an impostor
            smtp.starttls(context=ssl.create_default_context(cafile=target.ca_file))
        if user:
            smtp.login(user, password or "")
        smtp.send_message(msg)


def send(options: NotifyOptions, s: Summary) -> list[str]:
    """Send to every target; returns the warnings (one per target that failed), never raises."""
    warnings = []
    if options.webhook_env:
        try:
            send_webhook(_env(options.webhook_env, "notify.webhook_env"), webhook_payload(s, options.title))
        except Exception as err:  # any failure to deliver is the receiver's problem, not the sweep's
            warnings.append(f"webhook not sent ({type(err).__name__}: {err})")
    if options.email:
        subject = text_of(s, options.title).splitlines()[0]
        try:
            send_email(options.email, subject, text_of(s, options.title))
        except Exception as err:
            warnings.append(f"email not sent ({type(err).__name__}: {err})")
    for w in warnings:
        log.warning("mfcl notify: %s", w)
    return warnings


class SweepNotifier:
    """The sweeper's side: watch the manifest for the first failure, then report the end."""

    def __init__(self, options: Optional[NotifyOptions], sweep_dir: str, sweep_id: str, report: Optional[str],
                 interval_s: float = WATCH_INTERVAL_S) -> None:
        self.options, self.sweep_dir, self.sweep_id, self.report = options, sweep_dir, sweep_id, report
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.failure_sent = False
        self._manifest: Any = None
        self._lock = threading.Lock()  # one manifest reader, shared by the watcher and the all-down sender
        self._senders: list[threading.Thread] = []
        self._unlisten: Any = None

    @classmethod
    def start(cls, options: Optional[NotifyOptions], manifest: Any, config: Any) -> "SweepNotifier":
        """A started notifier for `manifest`'s sweep (one that does nothing without options). The
        report is named when `hydra/callbacks=mfcl` will write it, right after the sweeper returns."""
        callbacks = config.hydra.get("callbacks") or {}
        with_report = any("mfcl" in str(cb.get("_target_", "")) for cb in callbacks.values())
        report = os.path.join(manifest.sweep_dir, "reports", "summary.md") if with_report else None
        notifier = cls(options, manifest.sweep_dir, manifest.sweep_id, report)
        if options is not None:
            # the callback's last chance is at interpreter exit, where a first import may fail
            # ("can't register atexit after shutdown"): import what sending needs now
            import email.message  # noqa: F401
            import smtplib  # noqa: F401
            import ssl  # noqa: F401
            import urllib.request  # noqa: F401

            import mfcl_sweeps.aggregate  # noqa: F401
        if options is not None and "failure" in options.on:
            notifier._thread = threading.Thread(target=notifier._watch, name="mfcl-notify", daemon=True)
            notifier._thread.start()
        if options is not None and events.ALL_DOWN in options.on:
            notifier._unlisten = events.listen(notifier._on_event)
        return notifier

    def _on_event(self, event: str, fields: dict) -> None:
        """In the launch's thread: send from a thread of its own, so the launch never waits on it."""
        if event != events.ALL_DOWN or os.path.realpath(fields["sweep_dir"]) != os.path.realpath(self.sweep_dir):
            return
        sender = threading.Thread(target=self._send_all_down, args=(fields,), name="mfcl-notify-down", daemon=True)
        self._senders.append(sender)
        sender.start()

    def _send_all_down(self, fields: dict) -> None:
        try:
            s = self._summary_so_far(events.ALL_DOWN)
        except Exception as err:
            log.warning("mfcl notify: every source down, not sent: %s", err)
            return
        s.sources, s.wait_s = fields["sources"], fields["wait_s"]
        send(self.options, s)

    def _records(self) -> dict:
        from mfcl_sweeps.state.manifest import SweepManifest

        with self._lock:
            if self._manifest is None:  # a reader of its own; a sweep on a database is found by its pointer
                self._manifest = SweepManifest(self.sweep_dir)
            return self._manifest.records()

    def check_failure(self) -> bool:
        """Send the first-failure message if a run has failed and none was sent yet."""
        if self.options is None or self.failure_sent or "failure" not in self.options.on:
            return self.failure_sent
        records = self._records()
        if any(r.status == model.FAILED for r in records.values()):
            self.failure_sent = True
            send(self.options, summarize(records, self.sweep_id, self.sweep_dir, "failure"))
        return self.failure_sent

    def _summary_so_far(self, event: str) -> Summary:
        """A summary of a sweep still under way, counting the runs not launched yet (they have
        no record) as pending."""
        s = summarize(self._records(), self.sweep_id, self.sweep_dir, event)
        with self._lock:
            s.counts = self._manifest.counts()
        return s

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.check_failure():
                    return
            except Exception as err:  # a journal being rewritten: try again next time
                log.debug("mfcl notify: watch: %s", err)

    def stop(self) -> None:
        self._stop.set()
        if self._unlisten is not None:
            self._unlisten()
        for thread in [self._thread, *self._senders]:  # an all-down message goes before the stop or end
            if thread is not None:
                thread.join()
        try:
            self.check_failure()  # a failure in the last interval still gets its message
        except Exception as err:
            log.warning("mfcl notify: %s", err)

    def ended(self, event: str = "end", error: Optional[str] = None) -> None:
        """The end message (`stopped` with the error when the launch itself failed)."""
        if self.options is None or "end" not in self.options.on:
            return
        try:
            records = self._records()
            s = summarize(records, self.sweep_id, self.sweep_dir, event) if event == "end" \
                else self._summary_so_far(event)
        except Exception as err:
            log.warning("mfcl notify: end of sweep not sent: %s", err)
            return
        s.best, s.error = best_run(records, self.options.metric), error
        s.report = self.report if event == "end" else None  # a stopped sweep writes no report
        send(self.options, s)

    def stopped(self, error: str) -> None:
        """The launch raised (every SSH host down, a scheduler refusing jobs...): first failure
        first, then why the sweep stopped, in place of the end message."""
        self.stop()
        self.ended("stopped", error)
