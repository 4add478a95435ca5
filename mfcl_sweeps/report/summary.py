"""`reports/summary.md`: the same numbers as index.html, as Markdown with PNG figures."""
from __future__ import annotations

import time
from collections import Counter
from typing import Optional, Sequence

import pandas as pd

from mfcl_sweeps.aggregate import ERROR_STATUS, Sweep
from mfcl_sweeps.report import tables
from mfcl_sweeps.report.params import Params

BEST = 5


def facts(sweep: Sweep, params: Params, configs: pd.DataFrame) -> list[str]:
    """The report's header lines (Markdown inline syntax; index.html shows them too)."""
    manifest, runs = sweep.manifest, sweep.runs
    counts = Counter(runs["status"])
    out = [f"sweep dir: `{manifest.get('sweep_dir', '')}`", f"sweep id: `{manifest.get('sweep_id', '')}`",
           f"runs: {len(runs)} (" + ", ".join(f"{s} {n}" for s, n in sorted(counts.items(), key=str)) + ")"]
    if sweep.metric:
        out.append(f"metric: `{sweep.metric}` ({'lower' if sweep.lower_is_better else 'higher'} is better)")
    else:
        out.append("metric: none (no eval.csv, no numeric return value; see docs/telemetry-and-reports.md)")
    if params.seed_keys:
        low, high = int(configs["n_runs"].min()), int(configs["n_runs"].max())
        out.append(f"seeds: {', '.join(f'`{k}`' for k in params.seed_keys)}; {len(configs)} configs, "
                   f"runs per config {low if low == high else f'{low}-{high}'}")
    return out


def best_configs(configs: pd.DataFrame, metric: Optional[str], n: int = BEST) -> pd.DataFrame:
    if not metric or "rank" not in configs or configs["rank"].isna().all():
        return configs.iloc[0:0]
    return configs[configs["rank"].notna()].sort_values("rank", kind="stable").head(n)


def best_runs(run_table: pd.DataFrame, runs: pd.DataFrame, metric: Optional[str], lower: bool,
              n: int = BEST) -> pd.DataFrame:
    if not metric or metric not in run_table:
        return run_table.iloc[0:0]
    scored = run_table[runs["status"].eq("completed") & run_table[metric].notna()].drop(columns="status")
    return scored.sort_values(metric, ascending=lower, kind="stable").head(n)


def render(sweep: Sweep, params: Params, configs: pd.DataFrame, run_table: pd.DataFrame,
           csv_names: Sequence[str], plots: Sequence[tuple[str, str]], *, max_rows: int = 200,
           links: Optional[dict] = None) -> str:
    metric, runs = sweep.metric, sweep.runs
    out = ["# Sweep report", "", *(f"- {f}" for f in facts(sweep, params, configs)),
           f"- generated: {time.strftime('%Y-%m-%d %H:%M:%S')}",
           "- all columns: " + ", ".join(f"[{n}]({n})" for n in csv_names) + "; interactive: [index.html](index.html)",
           ""]
    seeded = bool(params.seed_keys)
    shown_configs = tables.config_table(configs, metric)
    if seeded:
        best = best_configs(configs, metric)
        if len(best):
            out += [f"## Best configs (mean `{metric}` over seeds)", "",
                    tables.markdown(shown_configs.loc[best.index]), ""]
        out += [f"## Configs ({len(configs)})", "", tables.markdown(shown_configs.head(max_rows)), ""]
    else:
        best = best_runs(run_table, runs, metric, sweep.lower_is_better)
        if len(best):
            out += [f"## Best runs (by `{metric}`)", "", tables.markdown(tables.clean(best, keep=("run_id",)),
                                                                          links=links), ""]
    for group, rows in run_table.groupby(runs["group"], sort=False, dropna=False):
        out += [f"## Group `{group}` ({len(rows)} runs)", "",
                tables.markdown(tables.clean(rows.head(max_rows), keep=("run_id", "status")), links=links)]
        if len(rows) > max_rows:
            out += ["", f"... {len(rows) - max_rows} more rows in [{csv_names[0]}]({csv_names[0]})"]
        out.append("")
    failed = runs[runs["status"] == ERROR_STATUS]
    if len(failed):
        user = run_table["overrides"] if "overrides" in run_table else pd.Series("", index=runs.index)
        out += ["## Failures", ""]
        out += [f"- `{r.run_id}` ({user[i]}): {tables.number(r.error) or 'no error recorded'}"
                for i, r in failed.iterrows()]
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{title}]({name})" for name, title in plots] + [""]
    return "\n".join(out)
