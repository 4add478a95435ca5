"""The driver keeps finished runs' JobReturns slim (memory flat in the number of runs): status,
return value, overrides, working dir and task name in memory; the configs in an unnamed
temporary file, read back equal when Hydra asks (tests/test_sweeper_suites.py runs Hydra's own
suites on them). The memory target itself is measured by bench/bench_driver_memory.py."""
from __future__ import annotations

import os
import pickle

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from mfcl_sweeps.launch.returns import ConfigSpill, SlimJobReturn, slim


def full_return(i: int) -> JobReturn:
    cfg = OmegaConf.create({"lr": i / 10, "db": {"user": "me", "pass": f"secret{i}"}, "big": list(range(2000))})
    hydra_cfg = OmegaConf.create({"hydra": {"job": {"name": "app", "num": i, "id": str(i)}, "runtime": {}}})
    ret = JobReturn(overrides=[f"lr={i / 10}"], cfg=cfg, hydra_cfg=hydra_cfg, working_dir=f"/w/{i}",
                    task_name="app", status=JobStatus.COMPLETED)
    ret.return_value = i * 2
    return ret


def test_a_slim_return_reads_back_the_same_configs_and_keeps_the_small_fields():
    spill = ConfigSpill()
    fulls = [full_return(i) for i in range(3)]
    slims = [slim(r, spill) for r in fulls]
    for full, kept in zip(fulls, slims):
        assert isinstance(kept, SlimJobReturn) and isinstance(kept, JobReturn)
        assert (kept.overrides, kept.working_dir, kept.task_name, kept.status, kept.return_value) == \
            (full.overrides, full.working_dir, full.task_name, full.status, full.return_value)
        assert kept.cfg == full.cfg and kept.hydra_cfg == full.hydra_cfg
        assert kept.hydra_cfg.hydra.job.num == full.hydra_cfg.hydra.job.num


def test_a_slim_return_holds_no_config_in_memory():
    spill = ConfigSpill()
    full = full_return(1)
    kept = slim(full, spill)
    assert not any(isinstance(v, DictConfig) for v in vars(kept).values())
    held = {k: v for k, v in vars(kept).items() if k != "_spill"}
    assert len(pickle.dumps(held)) * 20 < len(pickle.dumps(full))


def test_the_spill_file_has_no_name(tmp_path):
    spill = ConfigSpill()
    slim(full_return(1), spill)
    target = os.readlink(f"/proc/self/fd/{spill._file.fileno()}")
    assert target.endswith("(deleted)"), target  # nothing to find in any directory, gone with the process


def test_the_spill_file_is_closed_with_the_last_return_without_a_resource_warning():
    import gc
    import warnings

    spill = ConfigSpill()
    kept = slim(full_return(1), spill)
    fd = spill._file.fileno()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del spill, kept
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]  # an error under -W error
    assert not os.path.exists(f"/proc/self/fd/{fd}")


def test_a_failure_made_up_by_the_driver_is_kept_as_it_is():
    ret = JobReturn(overrides=["a=1"], status=JobStatus.FAILED)
    ret._return_value = RuntimeError("job exited with code 9")
    assert slim(ret, ConfigSpill()) is ret


def test_a_return_read_from_a_result_file_keeps_the_workers_bytes():
    import cloudpickle

    spill = ConfigSpill()
    full, other = full_return(1), full_return(2)
    kept = slim(full, spill, cloudpickle.dumps(other))  # the bytes are what is kept, not pickled anew
    assert kept.cfg == other.cfg and kept.hydra_cfg == other.hydra_cfg and kept.cfg != full.cfg
    assert kept.return_value == full.return_value  # the small fields come from the return itself
