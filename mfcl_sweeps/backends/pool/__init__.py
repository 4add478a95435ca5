"""One sweep over several sources at once (`hydra/launcher=mfcl_pool`): local slots, SSH hosts,
torchrun, Slurm and PBS allocations, each driven by its own backend (a child), with placement,
affinity, health, failover and work stealing done once here (docs/pool.md).

- config.py: the pool's options (declared once, checked by mfcl_sweeps.options);
- sources.py: the `sources` list (short form, mappings, named presets) -> SourceSpecs (pure);
- placement.py: affinity (which sources can give a run its resources) and the strategies (pure);
- logs.py: logs/task_assignments.log, source_utilization.log, health_status.log, sources/<name>.log;
- backend.py: PoolBackend, the Backend the driver loop sees.
"""
