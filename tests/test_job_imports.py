"""What a job's process imports before its run starts: every array task (and every unpacked
Slurm/PBS run) pays it on a node, so the driver-only parts (sweep files, options) stay out."""
import subprocess
import sys


def test_a_task_imports_no_driver_only_modules() -> None:
    code = ("import sys; import mfcl_sweeps.backends.slurm_task, mfcl_sweeps.backends.pack_task, mfcl_sweeps.job.worker;"
            "print(','.join(m for m in ('mfcl_sweeps.spec', 'mfcl_sweeps.sweeper', 'mfcl_sweeps.config', 'submitit')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
