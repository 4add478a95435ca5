"""Summary frame -> `reports/summary_<timestamp>.csv`, `reports/summary.md`, PNG plots, optional HTML.

    files = write_report("multirun/2024-05-01/12-00-00", html=True)

`summary.md` has per-group tables (one column per swept parameter), the best runs by the target
metric, the failures with their error lines, and the plots saved next to it: the target metric
against each swept parameter, step time and budget used per run.
"""
from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pandas as pd

from mfcl_sweeps.aggregate import ERROR_STATUS, load_manifest, lower_is_better, summarize

REPORTS_DIR = "reports"


@dataclass
class ReportFiles:
    csv: str
    markdown: str
    html: Optional[str] = None
    plots: list = field(default_factory=list)


def swept_parameters(frame: pd.DataFrame) -> pd.DataFrame:
    """One column per override key whose value differs between runs (strings, as written)."""
    rows = []
    for overrides in frame["overrides"]:
        row = {}
        for item in overrides.split():
            key, _, value = item.partition("=")
            row[key.lstrip("+~")] = value
        rows.append(row)
    params = pd.DataFrame(rows, index=frame.index)
    return params[[c for c in params.columns if params[c].nunique(dropna=False) > 1]]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in frame[list(columns)].itertuples(index=False)]
    return "\n".join(lines)


def _file_part(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)


def _main_metric(frame: pd.DataFrame) -> str:
    counts = Counter(frame["target_metric"].dropna())
    return counts.most_common(1)[0][0] if counts else "accuracy"


def make_plots(frame: pd.DataFrame, params: pd.DataFrame, out_dir: str) -> list[str]:
    """PNG files in `out_dir`; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = _main_metric(frame)
    done = frame[frame["accuracy_value"].notna()]
    groups = list(dict.fromkeys(frame["group"]))
    names = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=80)
        plt.close(fig)
        names.append(name)

    for param in params.columns if len(done) else ():
        values = params.loc[done.index, param]
        numeric = pd.to_numeric(values, errors="coerce")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if numeric.notna().all():
            x = numeric
            if (x > 0).all() and x.max() / x.min() >= 100:
                ax.set_xscale("log")
        else:
            categories = sorted(values.fillna("").unique())
            x = values.fillna("").map({c: i for i, c in enumerate(categories)})
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        for group in groups:
            sel = done["group"] == group
            ax.scatter(x[sel], done.loc[sel, "accuracy_value"], label=str(group), alpha=0.7)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {param}")
        if len(groups) > 1:
            ax.legend(fontsize="small")
        save(fig, f"{_file_part(metric)}_vs_{_file_part(param)}.png")

    for column, label, name in (("step_time_ms", "step time (ms)", "step_time_ms.png"),
                                ("budget_used", "budget used / limit", "budget_used.png")):
        y = frame[column] / frame["budget_limit"] if column == "budget_used" else frame[column]
        if y.notna().any():
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for group in groups:
                sel = frame["group"] == group
                ax.scatter(frame.loc[sel, "index"], y[sel], label=str(group), alpha=0.7, s=12)
            ax.set_xlabel("run index")
            ax.set_ylabel(label)
            ax.set_title(label)
            if len(groups) > 1:
                ax.legend(fontsize="small")
            save(fig, name)
    return names


def render_markdown(frame: pd.DataFrame, params: pd.DataFrame, manifest: dict, csv_name: str,
                    plots: Sequence[str], *, max_rows: int = 200) -> str:
    metric = _main_metric(frame)
    table = pd.concat([frame, params.add_prefix("param:")], axis=1)
    counts = Counter(frame["status"])
    out = [
        "# Sweep report", "",
        f"- sweep dir: `{manifest.get('sweep_dir', '')}`",
        f"- sweep id: `{manifest.get('sweep_id', '')}`",
        f"- generated: {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"- runs: {len(frame)} (" + ", ".join(f"{s} {n}" for s, n in sorted(counts.items(), key=str)) + ")",
        f"- target metric: `{metric}` ({'lower' if lower_is_better(metric) else 'higher'} is better)",
        f"- all columns: [{csv_name}]({csv_name})", "",
    ]
    scored = table[table["accuracy_value"].notna() & (table["status"] == "completed")]
    if len(scored):
        best = scored.sort_values("accuracy_value", ascending=lower_is_better(metric), kind="stable").head(5)
        out += ["## Best runs", "", markdown_table(best, ["run_id", "group", "accuracy_value",
                                                          "time_to_target_min", "step_time_ms",
                                                          "overrides"]), ""]
    columns = (["run_id", "status"] + [f"param:{p}" for p in params.columns]
               + ["accuracy_value", "time_to_target_min", "ips_mean", "step_time_ms", "bytes_per_step",
                  "budget_mode", "budget_used", "budget_limit", "energy_Wh", "fidelity_mean", "return_value"])
    columns = [c for c in columns if c in ("run_id", "status") or table[c].notna().any()]
    for group, rows in table.groupby("group", sort=False, dropna=False):
        out += [f"## Group `{group}` ({len(rows)} runs)", "", markdown_table(rows.head(max_rows), columns)]
        if len(rows) > max_rows:
            out += ["", f"... {len(rows) - max_rows} more rows in [{csv_name}]({csv_name})"]
        out.append("")
    failed = table[table["status"] == ERROR_STATUS]
    if len(failed):
        out += ["## Failures", ""]
        out += [f"- `{r.run_id}` ({r.overrides}): {_cell(r.error) or 'no error recorded'}"
                for r in failed.itertuples()]
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    return "\n".join(out)


def render_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = ("body{font-family:sans-serif;max-width:80em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}")
    return f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sweep report</title>" \
           f"<style>{style}</style></head><body>\n{body}</body></html>\n"


def write_report(sweep_dir: str, *, html: bool = False, plots: bool = True, metric: str = "accuracy",
                 max_rows: int = 200) -> ReportFiles:
    """Summarize `sweep_dir` and write the report files under `<sweep_dir>/reports/`."""
    frame = summarize(sweep_dir, metric=metric)
    manifest = load_manifest(sweep_dir)
    out_dir = os.path.join(sweep_dir, REPORTS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    csv_name = f"summary_{time.strftime('%Y%m%d-%H%M%S')}.csv"
    files = ReportFiles(csv=os.path.join(out_dir, csv_name), markdown=os.path.join(out_dir, "summary.md"))
    _write_atomic(files.csv, frame.to_csv(index=False))
    params = swept_parameters(frame)
    files.plots = [os.path.join(out_dir, p) for p in make_plots(frame, params, out_dir)] if plots else []
    markdown = render_markdown(frame, params, manifest, csv_name,
                               [os.path.basename(p) for p in files.plots], max_rows=max_rows)
    _write_atomic(files.markdown, markdown)
    if html:
        files.html = os.path.join(out_dir, "summary.html")
        _write_atomic(files.html, render_html(markdown))
    return files


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
