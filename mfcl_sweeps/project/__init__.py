"""A user's project: what `mfcl-sweeps init` finds and writes, and the model and screen of
`mfcl-sweeps configure`."""
