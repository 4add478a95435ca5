"""Each supported sweep-file form (tests/fixtures/sweeps/) and its exact expansion."""
from __future__ import annotations

from pathlib import Path

import pytest

from mfcl_sweeps.expand import count, iter_runs, make_run_id
from mfcl_sweeps.model import Budget
from mfcl_sweeps.spec import SpecOptions, load_spec

SWEEPS = Path(__file__).parent / "fixtures" / "sweeps"


def runs_of(name: str, **options):
    spec = load_spec(str(SWEEPS / name), options=SpecOptions(**options))
    runs = list(iter_runs(spec))
    assert count(spec) == len(runs)
    return spec, runs


def test_native_grid_paired_budget_exclude_seeds():
    spec, runs = runs_of("native.yaml")
    assert spec.dialect == "native"
    assert len(runs) == 12  # (2 lr x 2 model - 1 excluded) x 2 paired x 2 seeds
    assert runs[0].overrides == (
        "train.log_every=10", "optimizer.lr=0.1", "model=mlp", "data.batch_size=32", "train.epochs=2",
        "runtime.budget.enabled=true", "runtime.budget.max_steps=100", "seed=0")
    assert runs[2].overrides[3:5] == ("data.batch_size=64", "train.epochs=4")  # paired: varied together
    assert not any("model=cnn" in r.overrides and "optimizer.lr=0.1" in r.overrides for r in runs)
    assert {r.budget for r in runs} == {Budget("iso_steps", 100, "accuracy", 0.9)}
    assert [r.position for r in runs] == list(range(12))
    assert make_run_id(0, runs[0].group, runs[0].combo) == "00000_default_lr-0.1_model-mlp_batch-size-32_epochs-2_seed-0"


def test_native_runs_with_defaults_names_and_resources():
    _, runs = runs_of("native_runs.yaml")
    assert [r.name for r in runs] == ["baseline", "fast", "big"]
    assert runs[0].overrides == ("optimizer.lr=0.01", "model=mlp")
    assert runs[1].overrides == ("optimizer.lr=0.1", "model=mlp")  # the run's key wins over defaults
    assert runs[2].overrides == ("optimizer.lr=0.01", "model=cnn", "train.loss_fp32=true",
                                 "runtime.budget.enabled=true", "runtime.budget.max_minutes=2.5")
    assert dict(runs[2].env) == {"MFCL_AMP_DTYPE": "bf16"}
    assert runs[0].resources.timeout_min == 30 and runs[0].resources.nnodes is None
    assert runs[1].resources.nnodes == 2 and runs[1].resources.timeout_min == 30
    assert [r.combo for r in runs] == ["baseline", "fast", "big"]


def test_entries_form_of_seed_000():
    spec, runs = runs_of("entries_000.yaml")
    assert spec.dialect == "entries"
    assert [r.group for r in runs] == ["mlp_small"] * 4 + ["cnn_tokens"] * 2
    assert runs[0].overrides == ("model=mlp", "data.batch_size=32", "train.loss_fp32=true",
                                 "runtime.budget.enabled=true", "runtime.budget.max_minutes=2.5")
    assert runs[1].overrides[2] == "train.loss_fp32=false" and dict(runs[1].env) == {"MFCL_AMP_DTYPE": "fp32"}
    assert runs[0].budget == Budget("iso_time", 2.5, "accuracy", 0.9)
    rdzv = {"backend": "c10d", "endpoint": "localhost:29500"}
    assert runs[0].resources.to_dict() == {"nnodes": 1, "rendezvous": rdzv}
    # The entry's own budget and nnodes win over the root's; "range(1,3)" is Hydra's sweep grammar.
    assert runs[4].overrides == ("model=cnn", "optimizer.lr=1", "runtime.budget.enabled=true",
                                 "runtime.budget.max_tokens=1000000")
    assert runs[5].overrides[1] == "optimizer.lr=2"
    assert runs[4].budget == Budget("iso_tokens", 1000000)
    assert runs[4].resources.to_dict() == {"nnodes": 2, "node_rank": 0, "rendezvous": rdzv}
    assert all("nnodes" not in o for r in runs for o in r.overrides)  # launcher params never reach Hydra


def test_hsm_form_of_seed_002():
    spec, runs = runs_of("hsm_002.yaml")
    assert spec.dialect == "hsm"
    assert spec.metadata["wandb_project"] == "my-ml-project"
    assert len(runs) == 8
    assert runs[0].overrides == ("seed=1", "optimizer.lr=0.001", "model.hidden=64", "model.dropout=0.1",
                                 "data.augmentation=basic")
    assert runs[1].overrides[2:] == ("model.hidden=128", "model.dropout=0.2", "data.augmentation=none")
    assert runs[-1].overrides[:2] == ("seed=2", "optimizer.lr=0.01")


def test_param_file_form_of_seed_003():
    spec, runs = runs_of("param_file_003.json")
    assert spec.dialect == "param-file"
    assert spec.metadata == {"comment": "learning rates on small instances"}
    assert [r.name for r in runs] == ["alpha-0.1", "alpha-0.5", "alpha-0.9"]
    assert [r.overrides for r in runs] == [("train.epochs=3", "optimizer.lr=0.1"),
                                           ("train.epochs=3", "optimizer.lr=0.5"),
                                           ("train.epochs=5", "optimizer.lr=0.9")]
    # Infrastructure keys are metadata, never Hydra overrides; ttl is the run's timeout.
    assert dict(runs[1].metadata) == {"instance_type": "t3.micro", "region": "us-west-2"}
    assert [r.resources.timeout_min for r in runs] == [30, 30, 120]


def test_wandb_grid():
    spec, runs = runs_of("wandb_grid.yaml")
    assert spec.dialect == "wandb"
    assert spec.metadata["wandb"]["metric"] == {"name": "accuracy", "goal": "maximize"}
    assert [r.overrides for r in runs[:2]] == [("train.epochs=3", "optimizer.lr=0.1", "model=mlp"),
                                               ("train.epochs=3", "optimizer.lr=0.1", "model=cnn")]
    assert len(runs) == 6


def test_wandb_random_is_seeded_and_in_range():
    _, first = runs_of("wandb_random.yaml")
    _, again = runs_of("wandb_random.yaml")
    _, other = runs_of("wandb_random.yaml", seed=7)
    assert [r.overrides for r in first] == [r.overrides for r in again]
    assert [r.overrides for r in first] != [r.overrides for r in other]
    assert len(first) == 5
    for run in first:
        values = dict(o.split("=", 1) for o in run.overrides)
        assert 0.0001 <= float(values["optimizer.lr"]) <= 0.1
        assert 0.0 <= float(values["train.dropout"]) <= 0.5
        assert 16 <= int(values["data.batch_size"]) <= 128
        assert values["model"] in ("mlp", "cnn") and values["train.epochs"] == "2"


def test_every_fixture_has_an_expansion_test():
    tested = {"native.yaml", "native_runs.yaml", "entries_000.yaml", "hsm_002.yaml", "param_file_003.json",
              "wandb_grid.yaml", "wandb_random.yaml"}
    assert {p.name for p in SWEEPS.iterdir()} == tested


@pytest.mark.parametrize("name", ["native.yaml", "entries_000.yaml", "hsm_002.yaml", "param_file_003.json"])
def test_spec_dict_is_json_and_hash_is_stable(name):
    import json

    a = load_spec(str(SWEEPS / name), options=SpecOptions())
    b = load_spec(str(SWEEPS / name), options=SpecOptions())
    json.dumps(a.to_dict())
    assert a.spec_hash() == b.spec_hash()
    assert a.spec_hash() != load_spec(str(SWEEPS / name), cli_overrides=["extra=1"]).spec_hash()
