"""A sweep dir -> `reports/`: `index.html` (self-contained, interactive), `summary.md` with PNG
figures, `summary_<time>.csv` (every column, one row per run) and `configs_<time>.csv` (one row
per config: runs that differ only in their seed, with mean, std, n and a 95% interval).

    files = write_report("multirun/2024-05-01/12-00-00")

Modules: `params` (overrides -> swept values, seed keys), `stats` (per-config statistics),
`tables` (cleaned display tables), `plots` (matplotlib figures), `summary` (Markdown),
`html` (the page), `live` (throttled refresh during a sweep).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from mfcl_sweeps.aggregate import load_sweep
from mfcl_sweeps.fsio import atomic_write

REPORTS_DIR = "reports"


@dataclass
class ReportFiles:
    csv: Optional[str]
    markdown: Optional[str]
    html: Optional[str] = None
    configs_csv: Optional[str] = None
    plots: list = field(default_factory=list)


def write_report(sweep_dir: str, *, html: bool = True, plots: bool = True, metric: Optional[str] = None,
                 mode: Optional[str] = None, max_rows: int = 200, live: bool = False) -> ReportFiles:
    """Summarize `sweep_dir` and write the report under `<sweep_dir>/reports/`.

    `metric`/`mode` choose what configs are ranked by (`aggregate.choose_metric`). `live`: read
    the journal, write index.html only (marked to reload itself while runs are active).
    """
    from mfcl_sweeps.report import html as page
    from mfcl_sweeps.report import params as params_mod
    from mfcl_sweeps.report import plots as figs
    from mfcl_sweeps.report import stats, summary, tables

    sweep = load_sweep(sweep_dir, metric=metric, mode=mode, live=live)
    runs = sweep.runs
    params = params_mod.swept(sweep.overrides, sweep.manifest, runs.index)
    configs = stats.config_labels(runs, params)
    config_rows = stats.per_config(runs, params, sweep.metric, sweep.lower_is_better)
    out_dir = os.path.join(sweep_dir, REPORTS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    files = ReportFiles(csv=None, markdown=None)
    if not live:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        files.csv = os.path.join(out_dir, f"summary_{stamp}.csv")
        files.configs_csv = os.path.join(out_dir, f"configs_{stamp}.csv")
        atomic_write(files.csv, runs.assign(**{f"param:{k}": params.values[k] for k in params.values})
                      .to_csv(index=False))
        atomic_write(files.configs_csv, config_rows.to_csv(index=False))

    run_table = tables.run_table(sweep, params)
    links = page.run_links(runs, sweep_dir, out_dir)
    shown = []  # (name, title, svg or None)
    for name, title, fig in (figs.figures(runs, params, configs, config_rows, sweep.metric, sweep.evals,
                                          sweep.timings) if plots else ()):
        if not live:
            files.plots.append(os.path.join(out_dir, f"{name}.png"))
            fig.savefig(files.plots[-1], dpi=figs.DPI)
        shown.append((name, title, page.svg(fig) if html else None))
        figs.close(fig)
    if not live:
        files.markdown = os.path.join(out_dir, "summary.md")
        names = [os.path.basename(files.csv), os.path.basename(files.configs_csv)]
        atomic_write(files.markdown, summary.render(
            sweep, params, config_rows, run_table, names, [(f"{n}.png", t) for n, t, _ in shown],
            max_rows=max_rows, links=links))
    if html:
        files.html = os.path.join(out_dir, "index.html")
        atomic_write(files.html, _page(sweep, params, config_rows, run_table, shown, links,
                                        live and not _ended(sweep_dir)))
    return files


def write_final_report(sweep_dir: str, **options) -> ReportFiles:
    """The report at a sweep's end, after stopping the live page's refresher (it must not
    overwrite the final page); `options` as for write_report."""
    from mfcl_sweeps.report import live as live_page

    live_page.stop(sweep_dir)
    return write_report(sweep_dir, **options)


def _ended(sweep_dir: str) -> bool:
    """Every planned run has ended (runs planned but not started yet are not rows of the page);
    a sweep dir without a journal has only its snapshot, which is final."""
    from mfcl_sweeps.state.lifecycle import sweep_ended
    from mfcl_sweeps.state.manifest import SweepManifest

    if not os.path.exists(os.path.join(sweep_dir, ".mfcl", "journal.jsonl")):
        return True
    return sweep_ended(SweepManifest(sweep_dir))


def _page(sweep, params, config_rows, run_table, shown, links, active) -> str:
    """index.html: header facts, best configs/runs, figures, failures, then the full tables."""
    import html as escape

    from mfcl_sweeps.report import html as page
    from mfcl_sweeps.report import summary, tables

    runs, metric = sweep.runs, sweep.metric
    facts = [escape.escape(f).replace("`", "") for f in summary.facts(sweep, params, config_rows)]
    sections = []
    config_table = tables.config_table(config_rows, metric)
    if params.seed_keys:
        best = summary.best_configs(config_rows, metric, 10)
        if len(best):
            sections.append((f"Best configs (mean {metric} over seeds)", page.table_section(
                "best", config_table.loc[best.index])))
    else:
        best = summary.best_runs(run_table, runs, metric, sweep.lower_is_better, 10)
        if len(best):
            sections.append((f"Best runs (by {metric})", page.table_section(
                "best", tables.clean(best, keep=("run_id",)), links)))
    if shown:
        sections.append(("Plots", "".join(page.figure(t, s) for _, t, s in shown)))
    failed = run_table[runs["status"] == "error"]
    if len(failed):
        cols = [c for c in ("run_id", "group", "overrides", "error") if c in failed]
        sections.append((f"Failures ({len(failed)})", page.table_section("failures", failed[cols], links)))
    sections.append((f"Configs ({len(config_rows)})", page.table_section("configs", config_table)))
    sections.append((f"Runs ({len(runs)})", page.table_section("runs", run_table, links)))
    return page.page(title=f"Sweep {sweep.manifest.get('sweep_id', '')}", facts=facts, sections=sections,
                     live=active)


