"""The files `mfcl-sweeps init` writes, as text (pure: a scan and choices in, text out).

The example sweep varies what the app's own config offers: a config group with two or more
options, one numeric key outside that group (a key inside it may not exist in the other option),
and seeds when the config has a `seed` key; every value is an option or a value of the composed
config, so the sweep validates against the app as written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from mfcl_sweeps.project.scan import Scheduler

HEADER = "# Written by `mfcl-sweeps init`; edit freely (docs/first-ten-minutes.md)."


@dataclass
class Presets:
    """What the launcher presets say; init's flags and prompts fill it."""
    partition: Optional[str] = None
    queue: Optional[str] = None
    account: Optional[str] = None
    timeout_min: int = 60
    gpus_per_node: int = 0
    ssh_hosts: list[str] = field(default_factory=list)
    ssh_workdir: Optional[str] = None


def flow(value: Any) -> str:
    """A value as inline YAML (`[0.1, 0.01]`, `mlp_small`)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _numeric_values(value: Any) -> Optional[list]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        return [value, value / 10] if value else [0.0, 0.1]
    return [value, value * 2] if value else [0, 1]


def example_axes(groups: dict[str, list[str]], choices: dict[str, str],
                 leaves: dict[str, Any]) -> tuple[dict[str, tuple[list, str]], bool]:
    """({key: (values, comment)}, use seeds) for the example sweep."""
    axes: dict[str, tuple[list, str]] = {}
    swept_group = next((g for g, opts in groups.items() if len(opts) >= 2 and "/" not in g), None)
    if swept_group:
        current = choices.get(swept_group, groups[swept_group][0])
        others = [o for o in groups[swept_group] if o != current]
        axes[swept_group] = ([current, others[0]], f"config group (options: {', '.join(groups[swept_group])})")
    candidates = [(k, v) for k, v in leaves.items()
                  if k != "seed" and (not swept_group or k.split(".")[0] != swept_group)]
    key = next((k for k, v in candidates if isinstance(v, float)), None) or next(
        (k for k, v in candidates if _numeric_values(v) is not None), None)
    if key:
        axes[key] = (_numeric_values(leaves[key]), f"composed default: {flow(leaves[key])}")
    return axes, isinstance(leaves.get("seed"), int) and not isinstance(leaves.get("seed"), bool)


def example_sweep(app_command: str, sweep_path: str, axes: dict[str, tuple[list, str]], seeds: bool) -> str:
    lines = [HEADER,
             f"#   mfcl-sweeps count {sweep_path}        how many runs",
             f"#   mfcl-sweeps plan {sweep_path}         the numbered runs and their overrides",
             f"#   {app_command} --multirun hydra/sweeper=mfcl hydra.sweeper.sweep_file={sweep_path}",
             "# Format: docs/sweep-files.md."]
    if axes:
        lines.append("grid:                          # every combination of these values")
        width = max(len(f"  {k}: {flow(v)}") for k, (v, _) in axes.items()) + 2
        lines += [f"{f'  {k}: {flow(v)}':<{width}}# {why}" for k, (v, why) in axes.items()]
    else:
        lines += ["runs:                          # the app's config has no keys to vary yet: one run",
                  "  - {name: baseline}"]
    if seeds:
        lines.append("seeds: 2                       # each config repeated with seed=0,1")
    keys = list(axes)
    lines += ["# paired:                       # lists that vary together (equal lengths)",
              f"#   - {{{keys[-1] if keys else 'a.key'}: [1, 2], other.key: [3, 4]}}",
              "# exclude:                      # drop every run matching all keys of one entry",
              f"#   - {{{', '.join(f'{k}: {flow(v[0])}' for k, (v, _) in axes.items()) or 'a.key: 1'}}}",
              "# max_runs: 100                 # keep the first 100 runs",
              "# budget: {mode: iso_time, limit: 5}   # the app reads runtime.budget.* (docs/sweep-files.md)"]
    return "\n".join(lines) + "\n"


def slurm_preset(sched: Scheduler, p: Presets) -> str:
    partition = p.partition or sched.default_queue
    return "\n".join([
        HEADER, "# Slurm job arrays: select with hydra/launcher=cluster (docs/slurm.md).",
        "defaults:", "  - mfcl_slurm", "  - _self_",
        f"partition: {flow(partition)}" + (f"   # sinfo: {', '.join(sched.queues)}" if sched.queues else ""),
        f"account: {flow(p.account)}      # your allocation, if the cluster asks for one",
        f"timeout_min: {p.timeout_min}      # --time of each run",
        f"gpus_per_node: {p.gpus_per_node or 'null'}",
        "cpus_per_task: null", "mem_gb: null", ""])


def pbs_preset(sched: Scheduler, p: Presets, name: str) -> str:
    queue = p.queue or sched.default_queue
    return "\n".join([
        HEADER, f"# PBS job arrays: select with hydra/launcher={name} (docs/pbs.md).",
        "defaults:", "  - mfcl_pbs", "  - _self_",
        f"queue: {flow(queue)}" + (f"   # qstat -Q: {', '.join(sched.queues)}" if sched.queues else ""),
        f"account: {flow(p.account)}", f"timeout_min: {p.timeout_min}      # walltime of each run",
        "ncpus: 1", f"ngpus: {p.gpus_per_node}", ""])


def ssh_preset(p: Presets) -> str:
    return "\n".join([
        HEADER, "# A pool of SSH hosts: select with hydra/launcher=ssh (docs/ssh.md).",
        "defaults:", "  - mfcl_ssh", "  - _self_",
        "hosts:                 # user@host[:port][:slots]", *[f"  - {flow(h)}" for h in p.ssh_hosts],
        f"workdir: {flow(p.ssh_workdir)}         # the project's checkout on the hosts (null: same path as here)",
        "sync: check           # each host must run this commit", ""])


def local_preset(gpu_count: int) -> str:
    gpu_lines = [f"gpus_per_job: 1        # {gpu_count} GPU(s) found by nvidia-smi: one run per GPU"] if gpu_count \
        else ["gpus_per_job: 0        # no GPU found (nvidia-smi)"]
    return "\n".join([
        HEADER, "# This machine, a process per run: select with hydra/launcher=local (docs/local-launcher.md).",
        "defaults:", "  - mfcl_local", "  - _self_",
        "max_concurrent: null   # default: CPU count", *gpu_lines, ""])


def presets(schedulers: list[Scheduler], p: Presets, gpu_count: int) -> dict[str, str]:
    """Preset name (hydra/launcher=NAME) -> file text."""
    out = {"local": local_preset(gpu_count)}
    kinds = {s.kind: s for s in schedulers}
    if "slurm" in kinds:
        out["cluster"] = slurm_preset(kinds["slurm"], p)
    if "pbs" in kinds:
        name = "pbs" if "slurm" in kinds else "cluster"
        out[name] = pbs_preset(kinds["pbs"], p, name)
    if p.ssh_hosts:
        out["ssh"] = ssh_preset(p)
    return out
