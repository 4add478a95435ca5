"""What a job's process imports before its run starts: every array task (and every unpacked
Slurm/PBS run) pays it on a node, so the driver-only parts (sweep files, options) stay out."""
from apprun import loaded_after


def test_a_task_imports_no_driver_only_modules() -> None:
    setup = "import mfcl_sweeps.backends.slurm_task, mfcl_sweeps.backends.pack_task, mfcl_sweeps.job.worker"
    assert loaded_after(setup, ("mfcl_sweeps.spec", "mfcl_sweeps.sweeper", "mfcl_sweeps.config", "submitit")) == []
