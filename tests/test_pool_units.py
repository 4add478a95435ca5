"""mfcl_pool's pure parts: the sources list (short form, mappings, presets), affinity, placement
by each strategy, health rules, and the one-line errors, without starting anything."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from mfcl_sweeps.backends.pool import placement
from mfcl_sweeps.backends.pool.backend import PoolBackend
from mfcl_sweeps.backends.pool.sources import SourceSpec, parse_sources
from mfcl_sweeps.backends.ssh.health import HealthRules, HostHealth
from mfcl_sweeps.backends.ssh.strategy import HostLoad
from mfcl_sweeps.errors import OptionError
from mfcl_sweeps.model import PlannedRun, RunResources


def specs(*sources, presets=None, preset_dir=None) -> list[SourceSpec]:
    return parse_sources(list(sources), presets or {}, preset_dir)


def run(run_id: str = "00001_default", **resources) -> PlannedRun:
    return PlannedRun(overrides=("lr=0.1",), config_hash="h" + run_id, run_id=run_id,
                      resources=RunResources(**resources))


def test_short_form_names_kind_source_and_slots():
    local, gpu1, slurm, named = specs("local:4", "ssh:gpu1:8", "slurm:32", "slurm:cluster:16")
    assert (local.kind, local.name, local.slots, local.options["max_concurrent"]) == ("local", "local", 4, 4)
    assert (gpu1.kind, gpu1.name, gpu1.slots, gpu1.options["hosts"]) == ("ssh", "gpu1", 8, ["gpu1:8"])
    assert (slurm.kind, slurm.name, slurm.slots, slurm.gpus) == ("slurm", "slurm", 32, None)
    assert (named.name, named.slots) == ("cluster", 16)


def test_ssh_short_form_with_user_and_port_gets_a_file_safe_name():
    (s,) = specs("ssh:me@gpu1:2222:4")
    assert s.options["hosts"] == ["me@gpu1:2222:4"] and s.name == "me_gpu1_2222" and s.slots == 4


def test_preset_file_fills_in_what_the_short_form_cannot_say(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text("defaults:\n  - mfcl_slurm\n  - _self_\npartition: gpu\naccount: lab\n")
    (s,) = specs("hpc:cluster:32", preset_dir=str(tmp_path))
    assert s.kind == "slurm" and s.options == {"partition": "gpu", "account": "lab"} and s.partitions == ("gpu",)


def test_inline_preset_wins_and_mapping_entries_keep_launcher_options(tmp_path: Path):
    (tmp_path / "box.yaml").write_text("defaults: [mfcl_ssh]\nhosts: [far:2]\nworkdir: /far\n")
    inline = {"box": {"kind": "ssh", "hosts": ["near:3"], "workdir": "/near"}}
    (s,) = specs("ssh:box:3", presets=inline, preset_dir=str(tmp_path))
    assert s.options["hosts"] == ["near:3"] and s.options["workdir"] == "/near"
    (m,) = specs({"kind": "slurm", "name": "big", "max_jobs": 5, "weight": 3, "partition": "a100", "gpus": 8})
    assert (m.slots, m.weight, m.gpus, m.partitions, m.options) == (5, 3.0, 8, ("a100",), {"partition": "a100"})


@pytest.mark.parametrize("sources, words", [
    (["cloud:4"], ["sources[0].kind='cloud'", "unknown source kind", "local, torchrun, ssh, slurm, pbs"]),
    (["local:4", "local:2"], ["two sources are named 'local'"]),
    ([{"name": "x"}], ["sources[0]: missing kind"]),
    (["hpc:nowhere:4"], ["hpc:NAME needs a Slurm or PBS preset"]),
    ([{"kind": "local", "slots": 0}], ["sources[0] (local).slots=0", ">= 1"]),
    ([{"kind": "local", "weight": -1}], ["weight=-1", "> 0"]),
    ([{"kind": "ssh", "hosts": ["a:1"], "partitions": ["gpu"]}], ["only slurm and pbs sources have partitions"]),
    (["slurm:c:4"], []),  # no preset named c: plain Slurm defaults
    ([{"kind": "slurm", "preset": "missing"}], ["preset='missing'", "no such preset"]),
])
def test_bad_sources_are_one_line_naming_the_entry(sources, words):
    if not words:
        assert specs(*sources)[0].kind == "slurm"
        return
    with pytest.raises(OptionError) as err:
        specs(*sources)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_child_option_error_names_the_source_and_the_launchers_own_wording():
    with pytest.raises(OptionError) as err:
        PoolBackend.check_options({"sources": ["local:2", {"kind": "slurm", "name": "c", "array_parallelism": 0}]})
    assert str(err.value).startswith("hydra.launcher.sources[1] (c): hydra.launcher.array_parallelism=0: must be >= 1")
    with pytest.raises(OptionError, match="not an option of mfcl_local; did you mean max_concurrent"):
        PoolBackend.check_options({"sources": [{"kind": "local", "max_concurent": 2}]})
    with pytest.raises(OptionError, match=r"hydra.launcher.strategy='fastest': must be one of"):
        PoolBackend.check_options({"sources": ["local:2"], "strategy": "fastest"})
    with pytest.raises(OptionError, match="no sources"):
        PoolBackend.check_options({"sources": []})


def test_affinity_gpus_nodes_and_partitions():
    laptop, box, cluster = specs({"kind": "local", "gpus": 0}, {"kind": "ssh", "name": "box", "hosts": ["b:2"],
                                 "gpus": 2}, {"kind": "slurm", "name": "cluster", "partitions": ["gpu", "cpu"]})
    assert placement.fitting([laptop, box, cluster], run(gpus_per_node=2)) == [False, True, True]
    assert placement.fitting([laptop, box, cluster], run(gpus_per_node=4)) == [False, False, True]
    assert placement.fitting([laptop, box, cluster], run(nnodes=2)) == [False, False, True]
    assert placement.fitting([laptop, box, cluster], run(partition="cpu")) == [False, False, True]
    assert placement.why_not(cluster, run(partition="big")) == "asks for partition 'big', cluster has gpu, cpu"
    with pytest.raises(placement.NoSourceFits) as err:
        placement.check_fits([laptop, box], run("00007_default", gpus_per_node=4))
    assert "run 00007_default (lr=0.1) fits no source" in str(err.value)
    assert "needs 4 GPU(s) per node, box declares 2" in str(err.value)


def loads(*free: int, weights=None) -> list[HostLoad]:
    return [HostLoad(slots=4, running=4 - f, weight=(weights or [1] * len(free))[i]) for i, f in enumerate(free)]


def test_strategies_pick_only_allowed_sources_with_free_slots():
    rng = random.Random(0)
    ok = [True, True, True]
    assert placement.pick("least_loaded", loads(1, 3, 2), ok, 0, rng) == 1
    assert placement.pick("least_loaded", loads(1, 3, 2), [True, False, True], 0, rng) == 2
    assert placement.pick("round_robin", loads(1, 3, 2), ok, 2, rng) == 2
    assert placement.pick("round_robin", loads(1, 0, 2), ok, 1, rng) == 2  # full source skipped
    assert placement.pick("least_loaded", loads(0, 0, 0), ok, 0, rng) is None
    assert placement.pick("random", loads(0, 2, 0), ok, 0, rng) == 1
    assert placement.pick("weighted", loads(4, 4, weights=[1, 3]), [True, True], 0, rng) == 1


def test_weighted_spreads_starts_in_proportion_to_weight():
    rng = random.Random(1)
    hosts = [HostLoad(slots=100, running=0, weight=1), HostLoad(slots=100, running=0, weight=3)]
    picks = []
    for _ in range(40):
        i = placement.pick("weighted", hosts, [True, True], 0, rng)
        h = hosts[i]
        hosts[i] = HostLoad(slots=h.slots, running=h.running, started=h.started + 1, weight=h.weight)
        picks.append(i)
    assert picks.count(0) == 10 and picks.count(1) == 30


def test_health_rules_disable_on_consecutive_failures_and_failure_rate():
    rules = HealthRules(max_consecutive_failures=3, max_failure_rate=0.4, min_jobs_for_rate=5)
    h = HostHealth()
    assert [h.record(False, rules) for _ in range(2)] == [None, None]
    assert h.record(False, rules) == "3 consecutive failed jobs"
    h = HostHealth()
    reasons = [h.record(ok, rules) for ok in (True, False, True, False, True, False)]
    assert reasons[:5] == [None] * 5 and reasons[5] == "failure rate 50% over 6 jobs (limit 40%)"
    assert h.disable("x", 1.0) and not h.disable("y", 2.0)  # disabled once, its first reason's time kept
    h.enable()
    assert h.enabled and h.finished == 0


def test_complete_command_swaps_the_recorded_launcher_for_the_pool():
    from mfcl_sweeps.commands.complete import complete_command

    recorded = {"sweep_dir": "/s/sweep", "command": {"python": "/py", "argv": [
        "train.py", "--multirun", "hydra/sweeper=mfcl", "hydra/launcher=mfcl_ssh", "hydra.launcher.hosts=[a:2]",
        "+hydra.launcher.sync=rsync", "lr=0.1,0.2"]}}
    cmd = complete_command(recorded, "local:2,slurm:cluster:8", retry_failed=False)
    assert cmd[:4] == ["/py", "train.py", "--multirun", "hydra/sweeper=mfcl"] and "lr=0.1,0.2" in cmd
    assert not any("mfcl_ssh" in a or "hosts" in a or "sync" in a for a in cmd)
    assert "hydra/launcher=mfcl_pool" in cmd and "hydra.launcher.sources=[local:2,slurm:cluster:8]" in cmd
    assert "hydra.sweeper.resume=skip_finished" in cmd and "hydra.sweep.dir='/s/sweep'" in cmd
    again = complete_command(recorded, "[local:2]", retry_failed=True, extra=["hydra.launcher.strategy=random"])
    assert "hydra.sweeper.resume=skip_completed" in again and "hydra.launcher.sources=[local:2]" in again
    assert again[-1] == "hydra.launcher.strategy=random"
    with pytest.raises(Exception, match="give at least one source"):
        complete_command(recorded, "[]", retry_failed=False)


def test_a_disabled_source_gets_no_runs_and_is_re_enabled_once_it_answers(tmp_path: Path):
    import time
    from types import SimpleNamespace

    session = SimpleNamespace(sweep_dir=str(tmp_path), master_config=None)
    pool = PoolBackend.from_options({"sources": [{"kind": "local", "name": "a", "slots": 2, "gpus": 0},
                                                 {"kind": "local", "name": "b", "slots": 3, "gpus": 0}],
                                     "health_check_interval_s": 0.2}, session=session)
    try:
        assert pool.capacity() == 5
        pool.disable(pool.by_name["b"], "3 consecutive failed jobs")
        assert pool.capacity() == 2  # b takes nothing while disabled
        time.sleep(0.3)
        assert pool.capacity() == 5  # asked again after health_check_interval_s: it answers
        health = (tmp_path / "logs" / "health_status.log").read_text()
        assert "source=b event=disabled reason='3 consecutive failed jobs'" in health
        assert "source=b event=enabled reason='answers again'" in health
    finally:
        pool.close()
