"""Runs that differ only in their seed -> one config row: mean, std, n and a 95% interval of the
metric, and the rank of configs by mean.

The interval is Student's t: mean +- t(0.975, n-1) * std / sqrt(n), with the sample std
(ddof=1); one run gives std and interval NaN.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from mfcl_sweeps.report.params import Params, labels

CONFIG = "config"  # per-run column naming the run's config (its label)


def config_labels(runs: pd.DataFrame, params: Params) -> pd.Series:
    """`group key=value ...` over the non-seed swept keys: runs with equal labels are seeds of one config."""
    parts = [runs["group"].astype(str)]
    parts += [key + "=" + labels(params.values[key]) for key in params.config_keys]
    label = parts[0]
    for part in parts[1:]:
        label = label + " " + part
    return label


def t_quantile(n: pd.Series) -> np.ndarray:
    """t(0.975, n-1) per count (NaN below 2 runs); scipy.special, not the slower-to-import scipy.stats."""
    from scipy.special import stdtrit

    df = n.to_numpy(dtype=float) - 1
    return np.where(df >= 1, stdtrit(np.maximum(df, 1), 0.975), np.nan)


def per_config(runs: pd.DataFrame, params: Params, metric: Optional[str], lower_is_better: bool) -> pd.DataFrame:
    """One row per config (first-seen order): group, the config keys, n_runs, and for the metric
    over its completed runs `<metric>_mean/_std/_n/_ci95_low/_ci95_high`, `rank` (1 = best mean).
    Without a metric, only the counts."""
    label = config_labels(runs, params)
    frame = pd.concat([runs[["group", "status"]], params.values[params.config_keys]], axis=1)
    frame[CONFIG] = label
    first = frame.drop_duplicates(CONFIG).set_index(CONFIG)
    out = first[["group", *params.config_keys]].copy()
    out["n_runs"] = label.value_counts().reindex(out.index)
    out["n_failed"] = (runs["status"] == "error").groupby(label).sum().reindex(out.index)
    if metric is not None and metric in runs:
        done = runs["status"] == "completed"
        values = runs[metric].where(done)
        grouped = values.groupby(label)
        mean, std, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
        half = t_quantile(n) * std / np.sqrt(n)
        out[f"{metric}_mean"] = mean.reindex(out.index)
        out[f"{metric}_std"] = std.reindex(out.index)
        out[f"{metric}_n"] = n.reindex(out.index).astype(int)
        out[f"{metric}_ci95_low"] = (mean - half).reindex(out.index)
        out[f"{metric}_ci95_high"] = (mean + half).reindex(out.index)
        out["rank"] = out[f"{metric}_mean"].rank(ascending=lower_is_better, method="min")
    out.index.name = CONFIG
    return out.reset_index()
