"""mfcl-sweeps Hydra plugins: the mfcl sweeper, launchers and callback (thin; work in `mfcl_sweeps`)."""
