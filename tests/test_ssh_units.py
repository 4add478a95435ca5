"""SSH launcher parts that need no sshd: option parsing, command building, path mapping, host
choice, health rules, and the remote supervisor (run here as a real process)."""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest

from mfcl_sweeps.backends.ssh.health import HealthRules, HostHealth
from mfcl_sweeps.backends.ssh.paths import PathMap, RemoteLayout, remote_spec
from mfcl_sweeps.backends.ssh.strategy import HostLoad, choose
from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import parse_options, parse_short
from mfcl_sweeps.errors import OptionError
from mfcl_sweeps.job.jobspec import JobSpec

INJECTION = "; $(touch /tmp/mfcl-pwned) ' \" \\ `id`\nline2 && rm -rf /nope"


# -- hosts and options --------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("gpu1", (None, "gpu1", None, 1)),
    ("gpu1:4", (None, "gpu1", None, 4)),
    ("me@gpu1:2222:4", ("me", "gpu1", 2222, 4)),
    ("me@gpu1::3", ("me", "gpu1", None, 3)),
    ("localhost:8", (None, "localhost", None, 8)),
])
def test_short_form(text, expected):
    h = parse_short(text, "hosts[0]")
    assert (h.user, h.host, h.port, h.slots) == expected


def test_localhost_runs_locally_only_when_bare():
    assert parse_short("localhost:2", "k").is_local
    assert not parse_short("me@localhost:2", "k").is_local
    assert not parse_short("localhost:22:2", "k").is_local


@pytest.mark.parametrize("options, needle", [
    ({"hosts": []}, "hydra.launcher.hosts=[]: no hosts; give at least one"),
    ({"hosts": ["a:1"], "strategy": "fastest"}, "hydra.launcher.strategy='fastest'"),
    ({"hosts": ["a:1"], "sync": "scp"}, "hydra.launcher.sync='scp'"),
    ({"hosts": ["a b:1"]}, "hydra.launcher.hosts[0]='a b:1'"),
    ({"hosts": [{"host": "a", "slots": 0}]}, "hydra.launcher.hosts[0].slots=0"),
    ({"hosts": [{"host": "a", "cores": 2}]}, "hydra.launcher.hosts[0].cores: unknown host key"),
    ({"hosts": [{"port": 22}]}, "hydra.launcher.hosts[0].host: missing"),
    ({"hosts": ["a:1", "a:2"]}, "'a' is listed twice"),
    ({"hosts": ["a:1"], "ssh_options": ["-oProxyCommand=x"]}, "hydra.launcher.ssh_options"),
    ({"hosts": ["a:1"], "bogus": 1}, "hydra.launcher.bogus=1: not an option of mfcl_ssh"),
    ({"hosts": [{"host": "a", "env": {"1X": "y"}}]}, "hosts[0].env.1X"),
])
def test_bad_options_name_the_key(options, needle):
    with pytest.raises(OptionError) as err:
        parse_options(options)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


# -- commands -----------------------------------------------------------------------------
def test_ssh_argv_multiplexes_and_keeps_host_key_checking():
    opts = parse_options({"hosts": ["me@gpu1:2222:4"], "identity_file": "/k", "known_hosts_file": "/kh",
                          "ssh_options": ["ProxyJump=bastion"]})
    argv = cmd.host_argv(opts, opts.hosts[0], "/tmp/ctl", "true")
    joined = " ".join(argv)
    assert argv[0] == "ssh" and argv[-2:] == ["me@gpu1", "true"]
    for part in ("ControlMaster=auto", "ControlPersist=60", "ControlPath=/tmp/ctl/%C", "-p 2222", "-i /k",
                 "UserKnownHostsFile=/kh", "ProxyJump=bastion", "BatchMode=yes"):
        assert part in joined
    assert "StrictHostKeyChecking" not in joined
    fresh = " ".join(cmd.host_argv(opts, opts.hosts[0], "/tmp/ctl", "true", multiplex=False))
    assert "ControlPath=none" in fresh and "ControlMaster=no" in fresh


def test_local_host_runs_through_sh():
    opts = parse_options({"hosts": ["localhost:2"]})
    assert cmd.host_argv(opts, opts.hosts[0], "/tmp/ctl", "echo hi") == ["sh", "-c", "echo hi"]


def test_job_script_carries_the_job_json_as_one_word():
    spec = JobSpec(overrides=[f"v={INJECTION}"], index=0, run={}, result_path="/r", sweep_dir="/s", session_path="/p")
    script = cmd.job_script(workdir="/w d", python="conda run -n x python", env={"A": "1 2"}, job_path="/j.json",
                            job_json=spec.to_json(), grace_s=5, worker_argv=["python", "-m", "w", "/p", "/j.json"])
    words = shlex.split(script)
    assert words[:6] == ["cd", "/w d", "&&", "exec", "env", "A=1 2"]
    assert words[6:9] == ["conda", "run", "-n"]
    assert JobSpec.from_json(words[words.index("/j.json") + 1]).overrides == [f"v={INJECTION}"]


def test_rsync_honours_gitignore_and_protects_remote_state(tmp_path):
    (tmp_path / ".git").mkdir()
    opts = parse_options({"hosts": ["me@gpu1:2222:4"]})
    tree, git = cmd.rsync_argvs(opts, opts.hosts[0], "/tmp/ctl", str(tmp_path), "/w", ["/multirun/"])
    assert tree[0] == "rsync" and tree[-2:] == [f"{tmp_path}/", "me@gpu1:/w/"]
    for part in ("--filter=:- .gitignore", "--exclude=/.mfcl-remote/", "--exclude=/multirun/", "--delete"):
        assert part in tree
    assert "ControlPath=/tmp/ctl/%C" in tree[tree.index("-e") + 1]
    assert "--checksum" in git and git[-2:] == [f"{tmp_path}/.git/", "me@gpu1:/w/.git/"]


# -- paths --------------------------------------------------------------------------------
def test_path_map_both_ways_most_specific_first():
    layout = RemoteLayout("/home/me/proj/multirun/x", "/data/w", "/home/me/proj")
    pm = layout.paths
    assert pm.to_remote("/home/me/proj/multirun/x/3") == f"{layout.root}/3"
    assert pm.to_remote("/home/me/proj/conf") == "/data/w/conf"
    assert pm.to_remote("/home/me/projector") == "/home/me/projector"
    assert pm.to_local(f"{layout.root}/3/.hydra") == "/home/me/proj/multirun/x/3/.hydra"
    assert pm.to_local("/data/w") == "/home/me/proj"
    assert PathMap.of(("/a", "/b")).to_local("/c") == "/c"


def test_remote_spec_points_at_host_paths_and_driver_journals():
    layout = RemoteLayout("/l/sweep", "/w", "/l")
    spec = JobSpec(overrides=["x=1"], index=3, run={}, env_set={"MFCL_SWEEP_DIR": "/l/sweep", "MFCL_SWEEP_ID": "s"},
                   result_path="/l/sweep/.mfcl/results/r.2.pkl", sweep_dir="/l/sweep", session_path="/l/s.pkl",
                   attempt=2)
    r = remote_spec(spec, "r", layout)
    assert r.journal is False and r.attempt == 2
    assert r.result_path == f"{layout.root}/.mfcl/results/r.2.pkl" and r.session_path == layout.session_path
    assert r.overrides[0] == "x=1"
    assert f"hydra.sweep.dir='{layout.root}'" in r.overrides
    assert r.env_set == {"MFCL_SWEEP_DIR": layout.root, "MFCL_SWEEP_ID": "s"}
    assert not any("'/l/sweep'" in o for o in r.overrides)


# -- strategies ---------------------------------------------------------------------------
def test_least_loaded_picks_the_emptiest_fraction():
    hosts = [HostLoad(slots=4, running=2), HostLoad(slots=2, running=0), HostLoad(slots=8, running=1)]
    assert choose("least_loaded", hosts, 0, random.Random(0)) == 1
    hosts[1] = HostLoad(slots=2, running=1)
    assert choose("least_loaded", hosts, 0, random.Random(0)) == 2


def test_round_robin_skips_full_and_disabled_hosts():
    hosts = [HostLoad(1, 0), HostLoad(1, 1), HostLoad(1, 0, enabled=False), HostLoad(1, 0)]
    assert choose("round_robin", hosts, 1, random.Random(0)) == 3
    assert choose("round_robin", hosts, 4, random.Random(0)) == 0


def test_random_only_free_hosts_and_seeded():
    hosts = [HostLoad(1, 1), HostLoad(2, 0), HostLoad(2, 0)]
    picks = [choose("random", hosts, 0, random.Random(s)) for s in range(30)]
    assert set(picks) == {1, 2}
    assert picks == [choose("random", hosts, 0, random.Random(s)) for s in range(30)]


def test_weighted_shares_follow_weights():
    started = [0, 0]
    for _ in range(30):
        hosts = [HostLoad(100, 0, started=started[0], weight=2.0), HostLoad(100, 0, started=started[1], weight=1.0)]
        started[choose("weighted", hosts, 0, random.Random(0))] += 1
    assert started == [20, 10]


def test_no_free_slot_means_no_choice():
    assert choose("least_loaded", [HostLoad(1, 1), HostLoad(1, 0, enabled=False)], 0, random.Random(0)) is None


# -- health -------------------------------------------------------------------------------
def test_consecutive_failures_disable():
    h, rules = HostHealth(), HealthRules(max_consecutive_failures=3, max_failure_rate=1.0)
    assert [h.record(ok, rules) for ok in (False, False, True, False, False)] == [None] * 5
    assert "3 consecutive" in h.record(False, rules)


def test_failure_rate_needs_enough_jobs():
    h, rules = HostHealth(), HealthRules(max_consecutive_failures=0, max_failure_rate=0.4, min_jobs_for_rate=5)
    outcomes = [h.record(ok, rules) for ok in (False, True, False, True)]
    assert outcomes == [None] * 4  # 50% but only 4 jobs
    assert "failure rate 60%" in h.record(False, rules)


def test_enable_resets_counts():
    h = HostHealth(consecutive=2, failed=2, finished=2)
    assert h.disable("unreachable", 5.0) and not h.disable("again", 6.0) and h.since == 5.0
    h.enable()
    assert h.enabled and h.reason is None and (h.finished, h.failed, h.consecutive) == (0, 0, 0)


# -- the supervisor, as a real process ------------------------------------------------------
def _supervise(tmp_path, *argv, grace=1.0):
    job = tmp_path / "jobs" / "j.json"
    proc = subprocess.Popen([sys.executable, "-m", "mfcl_sweeps.backends.ssh_remote", "--grace", str(grace), str(job),
                             '{"k": 1}', "--", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stderr.readline().decode().split()
    assert first[0] == cmd.PID_MARK
    assert json.loads(job.read_text()) == {"k": 1}
    return proc, int(first[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_supervisor_reports_exit_code_and_output(tmp_path):
    proc, _ = _supervise(tmp_path, "sh", "-c", "echo out; echo err >&2; exit 3")
    out, err = proc.stdout.read(), proc.stderr.read()  # stdin stays open: closing it would stop the job
    assert proc.wait(timeout=20) == 3
    assert out.decode().split() == ["out", "err"]  # the job's stderr joins its stdout (the run log)
    assert err.decode().strip().splitlines()[-1] == f"{cmd.EXIT_MARK} 3"


def test_supervisor_kills_the_group_when_its_channel_closes(tmp_path):
    # the job's child (sleep) must go too: the whole process group dies with the connection
    proc, pgid = _supervise(tmp_path, "sh", "-c", "sleep 60 & sleep 60; wait")
    assert _group_alive(pgid)
    proc.stdin.close()
    proc.wait(timeout=20)
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pgid)
    assert proc.stderr.read().decode().strip().endswith(f"{cmd.EXIT_MARK} {-signal.SIGTERM}")
