"""The report's figures (matplotlib, Agg): saved as PNG for summary.md (1000 px wide) and as
inline SVG for index.html. Each builder returns (name, title, figure) or nothing.

- `<metric> vs <param>` per swept non-seed parameter: each run a small point, each config its
  mean with a 95% interval bar (none for a single run); log x when the values span 100x or more;
  categories labelled, "(default)" for runs without the key; colour = a second parameter
  (the one with fewest values), else the group. Seed keys are never an axis.
- parallel coordinates over the swept parameters and the metric (one line per config);
- learning curves: the metric per step from eval.csv and the step time from timings.csv, mean
  per config (the best 10 configs when there are more);
- budget use: a histogram of used / limit.
Scatter points are rasterized above 2,000 runs so a 10,000-run SVG stays small.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd

from mfcl_sweeps.report.params import DEFAULT, Params, labels, numeric
from mfcl_sweeps.report.stats import t_quantile

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 5.0, 100  # PNG 1000 x 500 px
MAX_COLOURS = 10
MAX_CURVES = 10
RASTER_ABOVE = 2000


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(title: str):
    fig, ax = _plt().subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _x_axis(values: pd.Series, ax: Any) -> tuple[pd.Series, bool]:
    """Positions for `values` and whether they are categories (ticks labelled)."""
    nums = numeric(values)
    if nums is not None and nums.notna().all():
        if (nums > 0).all() and nums.max() / nums.min() >= 100:
            ax.set_xscale("log")
        return nums, False
    text = labels(values)
    order = ([DEFAULT] if (text == DEFAULT).any() else []) + sorted(set(text) - {DEFAULT}, key=_sort_key)
    ax.set_xticks(range(len(order)), order, rotation=20 if max(map(len, order)) > 8 else 0, ha="right")
    return text.map({c: i for i, c in enumerate(order)}).astype(float), True


def _num(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _sort_key(text: Any) -> tuple:
    value = _num(str(text))
    return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))


def _shifter(x: pd.Series, categorical: bool, log: bool):
    """shift(values, fraction): values moved by `fraction` of the axis (category units for categories)."""
    if categorical or x.empty:
        return lambda v, a: v + a
    low, high = float(x.min()), float(x.max())
    if log:
        span = np.log10(high / low) or 1.0
        return lambda v, a: v * 10 ** (a * span)
    span = (high - low) or abs(high) or 1.0
    return lambda v, a: v + a * span


def _colour_key(params: Params, x_key: str, runs: pd.DataFrame, done: pd.Series) -> tuple[str, pd.Series]:
    """The second parameter to colour by: the one with fewest (but 2 to MAX_COLOURS) values among
    the plotted runs; else the group when there are several; else one colour."""
    counts = {k: labels(params.values[k])[done].nunique() for k in params.config_keys if k != x_key}
    usable = [k for k, n in counts.items() if 2 <= n <= MAX_COLOURS]
    if usable:
        key = min(usable, key=counts.get)
        return key, labels(params.values[key])
    if runs.loc[done, "group"].nunique() > 1:
        return "group", runs["group"].astype(str)
    return "", pd.Series("all runs", index=runs.index)


def metric_vs_param(runs: pd.DataFrame, params: Params, configs: pd.Series, metric: str,
                    key: str) -> tuple[str, str, Any]:
    title = f"{metric} vs {key}"
    fig, ax = _figure(title)
    done = (runs["status"] == "completed") & runs[metric].notna()
    x, categorical = _x_axis(params.values[key], ax)
    colour_name, colour = _colour_key(params, key, runs, done)
    names = sorted(colour[done].unique(), key=_sort_key)[:MAX_COLOURS]
    cmap = _plt().get_cmap("tab10")
    shift = _shifter(x[done], categorical, ax.get_xscale() == "log")
    width = (0.6 if categorical else 0.04) / max(1, len(names))  # colours side by side, not on top
    for i, name in enumerate(names):
        sel = done & (colour == name)
        offset = (i - (len(names) - 1) / 2) * width
        xs = shift(x[sel], offset)
        if categorical:  # spread the runs of one category a little so they do not hide each other
            xs = xs + np.random.default_rng(i).uniform(-width / 3, width / 3, len(xs))
        ax.scatter(xs, runs.loc[sel, metric], s=10, alpha=0.35, color=cmap(i % 10),
                   rasterized=len(runs) > RASTER_ABOVE)
        grouped = runs.loc[sel, metric].groupby(configs[sel])
        mean, std, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
        cx = shift(x[sel].groupby(configs[sel]).first().reindex(mean.index), offset)
        half = np.nan_to_num(t_quantile(n) * std / np.sqrt(n))
        order = np.argsort(cx.to_numpy())
        ax.errorbar(cx.to_numpy()[order], mean.to_numpy()[order], yerr=half[order], fmt="o", capsize=4,
                    color=cmap(i % 10), label=f"{colour_name}={name}" if colour_name else name, markersize=6)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.legend(fontsize="small", title="mean ± 95% interval", title_fontsize="small", loc="best")
    return f"{_file_part(metric)}_vs_{_file_part(key)}", title, fig


def parallel_coordinates(params: Params, config_rows: pd.DataFrame, metric: str) -> Optional[tuple[str, str, Any]]:
    keys = [k for k in params.config_keys if k in config_rows]
    mean = f"{metric}_mean"
    if len(keys) < 2 or mean not in config_rows or config_rows[mean].notna().sum() < 2:
        return None
    title = f"parallel coordinates: swept parameters and {metric} (mean per config)"
    fig, ax = _figure(title)
    columns, ticks = [], []
    for key in keys:
        nums = numeric(config_rows[key])
        if nums is not None and nums.notna().all():
            log = (nums > 0).all() and nums.max() / nums.min() >= 100
            v = np.log10(nums) if log else nums
            lo, hi = float(v.min()), float(v.max())
            columns.append((v - lo) / ((hi - lo) or 1))
            ticks.append([(0, f"{nums.min():.3g}"), (1, f"{nums.max():.3g}")])
        else:
            text = labels(config_rows[key])
            order = sorted(text.unique(), key=_sort_key)
            pos = {c: i / max(1, len(order) - 1) for i, c in enumerate(order)}
            columns.append(text.map(pos))
            ticks.append([(pos[c], c) for c in order])
    values = config_rows[mean]
    lo, hi = float(values.min()), float(values.max())
    columns.append((values - lo) / ((hi - lo) or 1))
    ticks.append([(0, f"{lo:.4g}"), (1, f"{hi:.4g}")])
    data = np.column_stack([c.to_numpy(dtype=float) for c in columns])
    cmap = _plt().get_cmap("viridis")
    from matplotlib.collections import LineCollection

    xs = np.arange(data.shape[1])
    segments = [np.column_stack([xs, row]) for row in data if not np.isnan(row[-1])]
    shade = data[~np.isnan(data[:, -1]), -1]
    ax.add_collection(LineCollection(segments, colors=cmap(shade), alpha=0.6, linewidths=1.2,
                                     rasterized=len(segments) > RASTER_ABOVE))
    for i, axis_ticks in enumerate(ticks):
        ax.axvline(i, color="black", linewidth=0.8)
        for y, text in axis_ticks:
            ax.annotate(text, (i, y), xytext=(4, 0), textcoords="offset points", fontsize="small", va="center")
    ax.set_xlim(-0.2, len(ticks) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, [*keys, metric])
    ax.set_yticks([])
    ax.grid(False)
    return "parallel_coordinates", title, fig


def curves(stream: pd.DataFrame, column: str, configs: pd.Series, config_rows: pd.DataFrame,
           *, metric_name: Optional[str] = None, ylabel: str = "", name: str = "",
           title: str = "") -> Optional[tuple[str, str, Any]]:
    """Mean per config of `column` against `step` (rows of one metric when `metric_name`)."""
    if stream.empty or column not in stream or "step" not in stream:
        return None
    rows = stream if metric_name is None else stream[stream["metric"].astype(str) == metric_name]
    if rows.empty:
        return None
    codes, names = pd.factorize(configs)  # integer codes: grouping a million rows by string is slow
    frame = pd.DataFrame({"config": codes[rows["_run"].to_numpy()],
                          "step": pd.to_numeric(rows["step"], errors="coerce").to_numpy(),
                          "y": pd.to_numeric(rows[column], errors="coerce").to_numpy()})
    present = set(np.unique(frame["config"]).tolist())
    ranked = (config_rows.sort_values("rank", kind="stable") if "rank" in config_rows else config_rows)["config"]
    code_of = {name: i for i, name in enumerate(names)}
    chosen = [code_of[c] for c in ranked if code_of.get(c) in present][:MAX_CURVES]
    fig, ax = _figure(title)
    mean = frame[frame["config"].isin(chosen)].groupby(["config", "step"])["y"].mean()
    for c in chosen:
        line = mean.loc[c]
        ax.plot(line.index, line.to_numpy(), label=names[c], linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    more = len(present) - len(chosen)
    ax.legend(fontsize="x-small", title=f"mean per config{f' (best {len(chosen)}; {more} more)' if more else ''}",
              title_fontsize="x-small", loc="best")
    return name, title, fig


def budget_use(runs: pd.DataFrame) -> Optional[tuple[str, str, Any]]:
    share = runs["budget_used"] / runs["budget_limit"]
    share = share[np.isfinite(share)]
    if share.empty:
        return None
    title = "budget use (used / limit per run)"
    fig, ax = _figure(title)
    ax.hist(share, bins=min(40, max(5, len(share) // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("used / limit")
    ax.set_ylabel("runs")
    return "budget_use", title, fig


def figures(runs: pd.DataFrame, params: Params, configs: pd.Series, config_rows: pd.DataFrame,
            metric: Optional[str], evals: pd.DataFrame, timings: pd.DataFrame) -> Iterator[tuple[str, str, Any]]:
    """Every figure the data allows, in report order."""
    if metric is not None and metric in runs and (runs[metric].notna() & (runs["status"] == "completed")).any():
        for key in params.config_keys:
            yield metric_vs_param(runs, params, configs, metric, key)
        parallel = parallel_coordinates(params, config_rows, metric)
        if parallel:
            yield parallel
        learning = curves(evals, "value", configs, config_rows, metric_name=metric, ylabel=metric,
                          name=f"{_file_part(metric)}_curves", title=f"learning curves: {metric} per step")
        if learning:
            yield learning
    steps = curves(timings, "step_time_ms", configs, config_rows, ylabel="step time (ms)", name="step_time_curves",
                   title="step time per step (timings.csv)")
    if steps:
        yield steps
    budget = budget_use(runs)
    if budget:
        yield budget


def _file_part(text: str) -> str:
    import re

    return re.sub(r"[^\w.-]+", "_", text)


def close(fig: Any) -> None:
    _plt().close(fig)
