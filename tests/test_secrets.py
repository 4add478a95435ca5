"""Secrets are never written: one policy (mfcl_sweeps.secrets) for the journal, manifest, run ids,
file names, config files and the recorded command; `resume` asks for what it redacted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from apprun import manifest_runs, run_app

from mfcl_sweeps import secrets
from mfcl_sweeps.spec.overrides import value_slug


@pytest.mark.parametrize("key", ["wandb.api_key", "+db.password", "db.passwd", "service.token", "auth.secret",
                                 "apiKey", "client_secret", "sentry.dsn", "git.pat", "http.authorization",
                                 "ssh.passphrase", "aws.access_key", "tls.private_key"])
def test_secret_keys(key: str) -> None:
    assert secrets.is_secret_key(key)


@pytest.mark.parametrize("key", ["data.max_tokens", "model.tokenizer", "video.keyframes", "model.key_dim", "lr",
                                 "author", "model.patch_size", "optimizer.betas"])
def test_not_secret_keys(key: str) -> None:
    assert not secrets.is_secret_key(key)


@pytest.mark.parametrize("name", ["DB_PASSWD", "GITHUB_PAT", "PROXY_AUTH", "AUTHORIZATION", "PASSPHRASE",
                                  "PGPASSWORD", "WANDB_API_KEY", "MY_SERVICE_KEY", "HF_TOKEN", "SENTRY_DSN"])
def test_secret_env_names(name: str) -> None:
    assert secrets.is_secret_env(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "CUDA_VISIBLE_DEVICES", "PWD", "PATHEXT"])
def test_plain_env_names(name: str) -> None:
    assert not secrets.is_secret_env(name)


def test_configured_names_are_secret_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not secrets.is_secret_key("db.sesame")
    monkeypatch.setenv(secrets.ENV_SECRET_KEYS, "sesame, other")
    assert secrets.is_secret_key("db.sesame")


def test_redact_hides_values_by_key_form_and_memory() -> None:
    out = secrets.redact({"overrides": ["+db.password=s3cr3t-pw", "lr=0.1"], "token": "tok-12345",
                          "url": "postgresql://me:pw-in-url@db:5432/x", "error": "login failed for s3cr3t-pw",
                          "max_tokens": 512})
    assert out == {"overrides": ["+db.password=***", "lr=0.1"], "token": "***",
                   "url": "postgresql://me:***@db:5432/x", "error": "login failed for ***", "max_tokens": 512}


def test_argv_redaction() -> None:
    argv = ["train.py", "--token", "tok-abcdef", "--api-key=zzzz", "+db.password=pw1234", "data.max_tokens=512"]
    assert secrets.redact_argv(argv) == ["train.py", "--token", "***", "--api-key=***", "+db.password=***",
                                         "data.max_tokens=512"]


def test_run_id_slugs_never_hold_a_secret() -> None:
    assert value_slug("+db.password", "hunter22") == "password-redacted"
    assert value_slug("data.max_tokens", 512) == "max-tokens-512"


SECRETS = {"override": "pw-override-7f3a", "file": "tok-file-91c2", "file2": "tok-file-0a7e", "env": "env-secret-5d1e",
           "dsn": "dsn-pass-44b0", "custom": "sesame-value-1b2c"}


def grep_dir(root: Path, needles: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_a_sweep_writes_no_secret_anywhere_and_resume_asks_for_them(tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"grid:\n  +service.token: [{SECRETS['file']}, {SECRETS['file2']}]\n")
    env = {"MY_SERVICE_PASSWD": SECRETS["env"], "DATABASE_URL": f"postgresql://me:{SECRETS['dsn']}@db/x"}
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local",
                   f"hydra.sweeper.sweep_file={sweep_file}", f"+db.password={SECRETS['override']}",
                   f"+db.sesame={SECRETS['custom']}", "hydra.sweeper.secret_keys=[sesame]", "mode=raise", env=env)
    assert proc.returncode != 0 and "2 run(s) failed" in proc.stderr, proc.stderr
    sweep = tmp_path / "sweep"
    runs = manifest_runs(sweep)
    assert sorted(runs) == ["00000_default_token-redacted", "00001_default_token-redacted"]
    leaks = grep_dir(sweep, list(SECRETS.values()))
    # Known, documented exception: the job files and the pickled session carry the real values,
    # which spawned jobs read; nothing else may.
    assert {p for p in leaks if not (p.startswith(".mfcl/jobs/") or p.startswith(".mfcl/session-"))} == set(), leaks

    # resume: a redacted value comes from MFCL_SECRET_<KEY>, or the command says how to give it
    no_tty = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "resume", str(sweep), "--dry-run"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert no_tty.returncode != 0 and "MFCL_SECRET_DB_PASSWORD" in no_tty.stderr
    assert len(no_tty.stderr.strip().splitlines()) == 1 and "Traceback" not in no_tty.stderr
    given = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "resume", str(sweep), "--dry-run"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MFCL_SECRET_DB_PASSWORD": SECRETS["override"],
                                "MFCL_SECRET_DB_SESAME": SECRETS["custom"]})
    assert given.returncode == 0, given.stderr
    assert "+db.password=***" in given.stdout and SECRETS["override"] not in given.stdout  # shown redacted


def test_resume_gives_redacted_values_back_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mfcl_sweeps.commands.resume import restore_secrets

    monkeypatch.setenv("MFCL_SECRET_DB_PASSWORD", "it's s3cret")
    assert restore_secrets(["app.py", "+db.password=***", "lr=0.1"], "DIR") == \
        ["app.py", "+db.password='it\\'s s3cret'", "lr=0.1"]
