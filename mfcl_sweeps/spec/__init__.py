"""Sweep file + `hydra.sweeper.*` options + command line -> one `SweepSpec` (pure)."""
from mfcl_sweeps.spec.load import load_spec
from mfcl_sweeps.spec.types import SpecOptions, SweepSpec

__all__ = ["SpecOptions", "SweepSpec", "load_spec"]
