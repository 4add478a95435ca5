"""mfcl-sweeps: a Hydra sweeper and launchers for ML sweeps."""
__version__ = "0.1.0"
