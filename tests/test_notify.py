"""`hydra.sweeper.notify`: real sweeps (Hydra subprocesses) notifying a local HTTP server (a
Slack-compatible webhook) and a local SMTP server (aiosmtpd, STARTTLS required, AUTH checked)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from services import IN_CI, PG_URL, require_service
from test_backend_contract import sweep as sweep_backend  # noqa: F401 (fixture: a session of a real sweep)
from test_ssh_launcher import PORT_A as SSH_PORT
from test_ssh_launcher import host as ssh_host
from test_ssh_launcher import project  # noqa: F401 (fixture: a git project cloned into the hosts' workdirs)
from test_ssh_launcher import sweep_argv as ssh_sweep_argv

from mfcl_sweeps import notify
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.state.records import RunRecord

APP = textwrap.dedent("""
    import hydra

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def main(cfg):
        if cfg.x == "fail":
            raise RuntimeError("boom: x was fail")
        return {"loss": 10.0 / float(cfg.x), "accuracy": float(cfg.x) / 10}

    if __name__ == "__main__":
        main()
""")
SECRET_URL_PART = "hooks/T000-SECRET-TOKEN"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("x: 1\n")
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(app: Path, env: dict, *overrides: str, name: str = "s") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "app.py", "--multirun", "hydra/sweeper=mfcl", f"hydra.sweeper.name={name}",
           "hydra.sweeper.notify.webhook_env=MFCL_TEST_HOOK_TOKEN", *overrides]
    return subprocess.run(cmd, cwd=app, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_sweep_notifies_first_failure_then_end_and_keeps_the_url_out_of_the_sweep_dir(app, webhook):
    url = f"http://127.0.0.1:{webhook.server_port}/{SECRET_URL_PART}"
    proc = sweep(app, {"MFCL_TEST_HOOK_TOKEN": url}, "x=2,fail,5", "hydra/callbacks=mfcl")
    assert proc.returncode != 0 and "1 run(s) failed" in proc.stderr  # the sweep's own outcome is unchanged
    events = [payload["event"] for _, _, payload in webhook.received]
    assert events == ["failure", "end"], proc.stderr
    path, content_type, end = webhook.received[-1]
    assert path == "/" + SECRET_URL_PART and content_type == "application/json"
    assert end["counts"] == {"completed": 2, "failed": 1, "total": 3}
    [failure] = end["failures"]
    assert failure["run_id"].startswith("00001_") and "boom: x was fail" in failure["error"]
    assert end["best"]["metric"] == "accuracy" and end["best"]["value"] == pytest.approx(0.5)
    assert end["best"]["run_id"].startswith("00002_")
    sweep_dir = app / "multirun" / "s"
    assert end["report"] == str(sweep_dir / "reports" / "summary.md")
    assert end["sweep_dir"] == str(sweep_dir) and end["sweep_id"] == "s"
    for line in ("3 run(s)", "failed 00001_", "boom: x was fail", "best: 00002_", "report: "):
        assert line in end["text"]  # Slack shows `text`
    leaked = [p for p in sweep_dir.rglob("*") if p.is_file() and SECRET_URL_PART.encode() in p.read_bytes()]
    assert not leaked


@pytest.mark.slow
def test_metric_lower_is_better_and_end_only(app, webhook):
    url = f"http://127.0.0.1:{webhook.server_port}/hook"
    proc = sweep(app, {"MFCL_TEST_HOOK_TOKEN": url}, "x=2,fail,5", "hydra.sweeper.notify.metric=loss",
                 "hydra.sweeper.notify.on=[end]", "hydra.sweeper.fail_on_error=false")
    assert proc.returncode == 0, proc.stderr
    [(_, _, end)] = webhook.received
    assert end["event"] == "end" and end["report"] is None
    assert end["best"] == {"run_id": end["best"]["run_id"], "metric": "loss", "value": pytest.approx(2.0)}
    assert end["best"]["run_id"].startswith("00002_")
    assert "mfcl-sweeps status" in end["text"]


@pytest.mark.slow
def test_a_sweep_on_a_database_store_is_reported_from_it(app, webhook):
    require_service("postgres")
    env = {"MFCL_TEST_HOOK_TOKEN": f"http://127.0.0.1:{webhook.server_port}/hook", "MFCL_STORE": PG_URL}
    name = f"notify-{uuid.uuid4().hex[:8]}"
    proc = sweep(app, env, "x=2,fail,5", "hydra.sweeper.fail_on_error=false", name=name)
    assert proc.returncode == 0, proc.stderr
    end = webhook.received[-1][2]
    assert end["event"] == "end" and end["counts"] == {"completed": 2, "failed": 1, "total": 3}
    assert "boom: x was fail" in end["failures"][0]["error"] and end["best"]["value"] == pytest.approx(0.5)


@pytest.mark.slow
def test_the_callbacks_notify_under_hydras_basic_sweeper(app, webhook):
    """Hydra's BasicSweeper re-raises a failed job's error and skips on_multirun_end: the callback
    still sends the first failure and the end (without a report) as the process exits."""
    env = {"MFCL_TEST_HOOK_TOKEN": f"http://127.0.0.1:{webhook.server_port}/hook"}
    ok = [sys.executable, "app.py", "--multirun", "hydra/callbacks=mfcl", "hydra.sweep.dir=multirun/ok",
          "hydra.callbacks.mfcl.notify.webhook_env=MFCL_TEST_HOOK_TOKEN", "hydra.callbacks.mfcl.html=false", "x=2,5"]
    proc = subprocess.run(ok, cwd=app, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [(_, _, end)] = webhook.received
    assert end["event"] == "end" and end["counts"] == {"completed": 2, "total": 2}
    assert end["report"] == str(app / "multirun" / "ok" / "reports" / "summary.md")
    assert (app / "multirun" / "ok" / "reports" / "summary.md").is_file()

    failing = [*ok[:4], "hydra.sweep.dir=multirun/bad", *ok[5:-1], "x=2,fail"]
    proc = subprocess.run(failing, cwd=app, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "boom: x was fail" in proc.stderr
    assert [p["event"] for _, _, p in webhook.received[1:]] == ["failure", "end"]
    end = webhook.received[-1][2]
    assert end["counts"] == {"completed": 1, "failed": 1, "total": 2} and end["report"] is None
    assert "boom: x was fail" in end["failures"][0]["error"]


@pytest.mark.slow
def test_every_ssh_host_down_sends_why_the_sweep_stopped(app, webhook):
    if shutil.which("ssh") is None:
        message = "no ssh client (scripts/ssh-test-hosts.sh installs it)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    url = f"http://127.0.0.1:{webhook.server_port}/hook"
    host = f"{{host:127.0.0.1,port:{closed_port()}}}"  # nothing listens: ssh's own connection refused
    proc = sweep(app, {"MFCL_TEST_HOOK_TOKEN": url}, "x=1,2", "hydra/launcher=mfcl_ssh",
                 f"hydra.launcher.hosts=[{host}]", "hydra.launcher.sync=none", "hydra.launcher.workdir=/tmp",
                 "hydra.launcher.connect_timeout_s=2")
    assert proc.returncode != 0 and "no ssh host is reachable" in proc.stderr
    [(_, _, stopped)] = webhook.received
    assert stopped["event"] == "stopped" and "no ssh host is reachable" in stopped["error"]
    assert "Connection refused" in stopped["error"] and stopped["report"] is None
    assert stopped["text"].startswith("mfcl sweep s stopped: no ssh host is reachable")


@pytest.mark.slow
def test_every_pool_source_down_is_told_while_the_sweep_waits_then_why_it_stopped(app, webhook):
    """Two SSH sources on ports where nothing listens: one message the moment both are down
    (while the launch still waits `all_down_timeout_s`), then the give-up one; not one per check."""
    require_service("ssh")  # the ssh client; no sshd is asked: the ports refuse
    ports = [closed_port(), closed_port()]
    sources = ",".join(f"{{kind:ssh,name:gpu{i},sync:none,connect_timeout_s:2,"
                       f"hosts:[{{host:127.0.0.1,port:{port},workdir:/tmp}}]}}" for i, port in enumerate(ports))
    proc = sweep(app, {"MFCL_TEST_HOOK_TOKEN": f"http://127.0.0.1:{webhook.server_port}/hook"}, "x=1,2,3",
                 "hydra/launcher=mfcl_pool", f"hydra.launcher.sources=[{sources}]",
                 "hydra.launcher.all_down_timeout_s=3", "hydra.launcher.health_check_interval_s=1")
    assert proc.returncode != 0 and "every source has been disabled for 3s" in proc.stderr, proc.stderr[-2000:]
    events = [payload["event"] for _, _, payload in webhook.received]
    assert events == ["all_down", "stopped"], events  # health checks every 1 s while waiting: still one
    down, stopped = (payload for _, _, payload in webhook.received)
    assert [s["name"] for s in down["sources"]] == ["gpu0", "gpu1"] and down["wait_s"] == 3
    for source, port in zip(down["sources"], ports):
        assert source["reason"].startswith("unreachable") and f"port {port}: Connection refused" in source["reason"]
    assert down["sweep_id"] == "s" and down["counts"] == {"total": 3, "pending": 3}
    assert down["text"].startswith("mfcl sweep s has every source down; it stops in 3s unless one comes back: "
                                   "3 run(s): 3 pending\n")
    assert "  down gpu0: unreachable" in down["text"] and "  down gpu1: unreachable" in down["text"]
    assert "every source has been disabled for 3s" in stopped["error"] and stopped["sources"] == []
    assert stopped["counts"] == {"total": 3, "pending": 3}  # the runs it never launched


@pytest.mark.slow
@pytest.mark.ssh
def test_every_ssh_host_down_mid_sweep_is_told_once_then_why_it_stopped(project, webhook):
    """mfcl_ssh with one real host, disabled by its first failed run (max_consecutive_failures=1)
    and not checked again: every host down while the launch waits; then it gives up."""
    tmp = project.parent
    argv = ssh_sweep_argv(project, [ssh_host(SSH_PORT, tmp / "host_a", "a", slots=1)], "x=range(3)", "fail=true",
                          "hydra/sweeper=mfcl", "hydra.sweeper.notify.webhook_env=MFCL_TEST_HOOK_TOKEN",
                          "hydra.launcher.max_consecutive_failures=1", "hydra.launcher.health_check_interval_s=600",
                          "hydra.launcher.all_down_timeout_s=2")
    env = {**os.environ, "MFCL_TEST_HOOK_TOKEN": f"http://127.0.0.1:{webhook.server_port}/hook"}
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "every ssh host has been down for 2s" in proc.stderr, proc.stderr[-2000:]
    received = {payload["event"]: payload for _, _, payload in webhook.received}
    events = [payload["event"] for _, _, payload in webhook.received]
    assert sorted(events) == ["all_down", "failure", "stopped"] and events[-1] == "stopped", events
    down = received["all_down"]
    assert down["sources"] == [{"name": f"127.0.0.1_{SSH_PORT}", "reason": down["sources"][0]["reason"]}]
    assert "failed" in down["sources"][0]["reason"] and down["wait_s"] == 2
    assert down["counts"]["total"] == 3 and down["counts"]["pending"] == 2, down["counts"]  # the first: journaled yet or not


def test_all_down_is_announced_once_per_outage(sweep_backend):
    """A pool's sources all disabled: one event, none while it lasts, another after one came back
    and all went down again."""
    from mfcl_sweeps import events
    from mfcl_sweeps.backends.pool.backend import PoolBackend

    pool = PoolBackend.from_options({"sources": ["local:1", "local:b:1"], "health_check_interval_s": 600},
                                    session=sweep_backend.session)
    heard = []
    stop = events.listen(lambda event, fields: heard.append((event, fields)))
    try:
        for src in pool.sources:
            pool.disable(src, f"{src.name} is gone")
        assert pool.capacity() == 0 and pool.capacity() == 0
        [(event, fields)] = heard
        assert event == "all_down" and fields["sweep_dir"] == str(sweep_backend.dir) and fields["wait_s"] == 120
        assert fields["sources"] == [{"name": "local", "reason": "local is gone"}, {"name": "b", "reason": "b is gone"}]
        pool.sources[1].health.enable()  # as a health check does once it answers again
        assert pool.capacity() == 1 and len(heard) == 1
        pool.disable(pool.sources[1], "gone again")
        assert pool.capacity() == 0 and len(heard) == 2 and heard[1][1]["sources"][1]["reason"] == "gone again"
    finally:
        stop()
        pool.close()


def test_an_all_down_message_that_cannot_be_sent_only_warns(tmp_path, monkeypatch, caplog):
    """Through the event path, as a backend raises it: the launch's thread never sees the error."""
    from omegaconf import OmegaConf

    from mfcl_sweeps import events
    from mfcl_sweeps.state.manifest import SweepManifest

    monkeypatch.setenv("MFCL_TEST_HOOK_TOKEN", f"http://127.0.0.1:{closed_port()}/hook")
    options = notify.parse_options({"webhook_env": "MFCL_TEST_HOOK_TOKEN", "on": ["all_down"]})
    manifest = SweepManifest(tmp_path)
    notifier = notify.SweepNotifier.start(options, manifest, OmegaConf.create({"hydra": {}}))
    events.emit(events.ALL_DOWN, sweep_dir=str(tmp_path / "other"), sources=[], wait_s=1)  # another sweep's
    events.emit(events.ALL_DOWN, sweep_dir=str(tmp_path), sources=[{"name": "a", "reason": "gone"}], wait_s=1)
    notifier.stop()  # waits for the sender
    assert caplog.text.count("mfcl notify: webhook not sent (URLError") == 1


def test_a_listener_that_raises_only_warns(caplog):
    from mfcl_sweeps import events

    def broken(event: str, fields: dict) -> None:
        raise RuntimeError("receiver broke")

    stop = events.listen(broken)
    try:
        events.emit(events.ALL_DOWN, sweep_dir="/nowhere")
    finally:
        stop()
    assert "a listener of all_down failed (RuntimeError: receiver broke)" in caplog.text


@pytest.mark.slow
def test_unreachable_webhook_only_warns(app):
    proc = sweep(app, {"MFCL_TEST_HOOK_TOKEN": f"http://127.0.0.1:{closed_port()}/hook"}, "x=1,2")
    assert proc.returncode == 0, proc.stderr
    assert "mfcl notify: webhook not sent (URLError" in proc.stdout + proc.stderr  # Hydra logs to stdout


@pytest.mark.slow
def test_a_bad_notify_option_fails_before_launching(app):
    proc = sweep(app, {}, "x=1,2", "hydra.sweeper.notify.on=[end,start]")
    assert proc.returncode != 0
    assert "hydra.sweeper.notify.on: 'start' is not an event" in proc.stderr and "Traceback" not in proc.stderr
    assert not (app / "multirun" / "s").exists()


# -- email -------------------------------------------------------------------------------------
@pytest.fixture
def smtp_server(tmp_path: Path):
    """aiosmtpd requiring STARTTLS before AUTH and MAIL, with a self-signed certificate."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Handler:
        def __init__(self) -> None:
            self.messages, self.logins = [], []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    handler = Handler()

    def authenticate(server, session, envelope, mechanism, auth_data):
        handler.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.login == b"sweeper" and auth_data.password == b"s3cret")

    controller = Controller(handler, hostname="127.0.0.1", port=closed_port(), tls_context=context,
                            require_starttls=True, authenticator=authenticate, auth_require_tls=True)
    controller.start()
    controller.cert = str(cert)
    yield controller
    controller.stop()


def _summary() -> notify.Summary:
    records = {
        "a": RunRecord("a", run_id="00000_default_x-1", index=0, status="completed", return_value="0.25"),
        "b": RunRecord("b", run_id="00001_default_x-fail", index=1, status="failed",
                       stderr_tail="Traceback ...\nRuntimeError: boom\n"),
        "c": RunRecord("c", run_id="00002_default_x-2", index=2, status="completed",
                       return_value="{'accuracy': 0.75}"),
    }
    s = notify.summarize(records, "lr_scan", "/data/multirun/lr_scan", "end")
    s.best = notify.best_run(records, "accuracy")
    return s


def test_email_over_starttls_with_login_from_env(smtp_server, monkeypatch):
    monkeypatch.setenv("MFCL_TEST_SMTP_USER", "sweeper")
    monkeypatch.setenv("MFCL_TEST_SMTP_PASSWORD", "s3cret")
    options = notify.parse_options({"email": {
        "to": ["me@example.org", "you@example.org"], "sender": "sweeps@example.org", "host": "127.0.0.1",
        "port": smtp_server.port, "user_env": "MFCL_TEST_SMTP_USER", "password_env": "MFCL_TEST_SMTP_PASSWORD",
        "ca_file": smtp_server.cert}})
    assert notify.send(options, _summary()) == []
    [(sender, rcpts, content)] = smtp_server.handler.messages
    assert sender == "sweeps@example.org" and rcpts == ["me@example.org", "you@example.org"]
    assert "Subject: mfcl sweep lr_scan finished: 3 run(s): 2 completed, 1 failed" in content
    assert "failed 00001_default_x-fail: RuntimeError: boom" in content
    assert "best: 00002_default_x-2 (accuracy = 0.75)" in content
    assert smtp_server.handler.logins == [("sweeper", "s3cret")]


def test_email_failures_are_warnings(smtp_server, monkeypatch):
    monkeypatch.setenv("MFCL_TEST_SMTP_USER", "sweeper")
    monkeypatch.setenv("MFCL_TEST_SMTP_PASSWORD", "wrong")
    base = {"to": "me@example.org", "sender": "s@example.org", "host": "127.0.0.1", "port": smtp_server.port,
            "user_env": "MFCL_TEST_SMTP_USER", "password_env": "MFCL_TEST_SMTP_PASSWORD"}
    cases = {
        "untrusted certificate": base,  # the system CAs do not know the test server's certificate
        "nothing listening": {**base, "port": closed_port()},
    }
    for why, email in cases.items():
        [warning] = notify.send(notify.parse_options({"email": email}), _summary())
        assert warning.startswith("email not sent"), why
    assert smtp_server.handler.messages == []


@pytest.mark.slow  # smtplib retries the refused login with LOGIN, which aiosmtpd answers only at the timeout
def test_a_refused_login_is_a_warning(smtp_server, monkeypatch):
    monkeypatch.setenv("MFCL_TEST_SMTP_USER", "sweeper")
    monkeypatch.setenv("MFCL_TEST_SMTP_PASSWORD", "wrong")
    email = {"to": "me@example.org", "sender": "s@example.org", "host": "127.0.0.1", "port": smtp_server.port,
             "user_env": "MFCL_TEST_SMTP_USER", "password_env": "MFCL_TEST_SMTP_PASSWORD", "ca_file": smtp_server.cert}
    [warning] = notify.send(notify.parse_options({"email": email}), _summary())
    assert warning.startswith("email not sent")
    assert smtp_server.handler.logins[0] == ("sweeper", "wrong") and smtp_server.handler.messages == []


@pytest.mark.parametrize("raw, message", [
    ({"webhook": "http://x"}, "notify.webhook: unknown key"),
    ({"webhook_env": "X", "on": ["start"]}, "'start' is not an event"),
    ({"email": {"to": "a@b"}}, "email.sender: required"),
    ({"email": {"to": "a@b", "sender": "c@d", "tls": True}}, "email.tls: unknown key"),
    ({"email": {"to": "a@b", "sender": "c@d", "user_env": "U", "starttls": False}}, "a login needs starttls"),
    ({"webhook_env": "SLACK_URL"}, "webhook_env=SLACK_URL: the manifest records the environment"),
    ({"email": {"to": "a@b", "sender": "c@d", "password_env": "SMTP_PW"}}, "name it like a secret"),
])
def test_bad_options_are_one_line_errors(raw, message):
    with pytest.raises(MfclError, match=message):
        notify.parse_options(raw)


def test_no_target_means_no_notifier():
    assert notify.parse_options({"webhook_env": None, "email": {"to": []}, "on": ["end"]}) is None
