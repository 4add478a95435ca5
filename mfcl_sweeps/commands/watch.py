"""`mfcl-sweeps watch SWEEP_DIR`: a live terminal view of a sweep, from its journal only.

Progress per group and per source (host and backend), the running runs with their elapsed
time, the latest failures with their error line, and an ETA; it exits when every planned run
has ended (status 0, or 1 when some failed). It reads `.mfcl/journal.jsonl` and nothing else
(no scheduler query), so it works from another machine on the shared filesystem and for
detached cluster sweeps. Ctrl-C leaves quietly.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from mfcl_sweeps import model
from mfcl_sweeps.liveness import mark_lost
from mfcl_sweeps.state.lifecycle import sweep_ended
from mfcl_sweeps.state.replay import spread_unseen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="the sweep dir (holds .mfcl/journal.jsonl)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default: 2)")
    parser.add_argument("--rows", type=int, default=10, help="running runs and failures shown (default: 10)")
    parser.add_argument("--once", action="store_true", help="print the view once and exit")


@dataclass
class View:
    """What the screen shows, computed from the journal's replay (pure data, for tests)."""
    sweep_id: str
    sweep_dir: str
    total: int
    counts: Counter
    groups: dict  # group -> Counter of states (planned but unseen runs are pending)
    sources: dict  # (host, backend) -> Counter of states
    running: list  # (run_id, host, backend, elapsed_s), longest first
    failures: list  # (run_id, host, error line), latest first
    elapsed_s: Optional[float]
    eta_s: Optional[float]
    ended: bool
    notes: list = field(default_factory=list)

    @property
    def finished(self) -> int:
        return sum(self.counts[s] for s in model.FINAL_STATES)


def _error_line(error: Any) -> str:
    lines = [ln.strip() for ln in str(error or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no error recorded)"


def build_view(manifest: Any, now: Optional[float] = None, rows: int = 10) -> View:
    now = time.time() if now is None else now
    records = list(manifest.records().values())
    mark_lost(records)  # a run whose process of this host is gone is shown lost, never running
    counts = Counter(r.status for r in records)
    plans = manifest.plans()
    planned = manifest.counts()["total"]
    unknown_total = not plans or plans[-1].count == 0  # a sweep the mfcl sweeper did not plan (callback)
    total = max(planned, len(records))
    counts[model.PENDING] += total - len(records)
    groups: dict = defaultdict(Counter)
    sources: dict = defaultdict(Counter)
    for r in records:
        groups[r.group][r.status] += 1
        if r.host or r.backend:
            sources[(r.host or "-", r.backend or "-")][r.status] += 1
    spread_unseen(groups, plans[-1] if plans else None, total - len(records))
    running = sorted(((r.run_id, r.host or "-", r.backend or "-", now - r.start_time if r.start_time else None)
                      for r in records if r.status in (model.RUNNING, model.CLAIMED)),
                     key=lambda x: -(x[3] or 0))
    failed = sorted((r for r in records if r.status == model.FAILED), key=lambda r: -(r.end_time or 0))
    failures = [(r.run_id, r.host or "-", _error_line(r.error)) for r in failed[:rows]]
    starts = [r.start_time for r in records if r.start_time]
    durations = [r.end_time - r.start_time for r in records
                 if r.status == model.COMPLETED and r.start_time and r.end_time]
    finished = sum(counts[s] for s in model.FINAL_STATES)
    ended = sweep_ended(manifest)
    ends = [r.end_time for r in records if r.end_time]
    elapsed = ((max(ends) if ended and ends else now) - min(starts)) if starts else None
    in_flight = counts[model.RUNNING]  # lost runs make no progress: no ETA from them
    remaining = total - finished - counts[model.LOST]
    eta = remaining * (sum(durations) / len(durations)) / in_flight if durations and in_flight and not ended \
        else None
    notes = ["total unknown until the sweep ends (its sweeper plans no runs ahead)"] if unknown_total and not ended \
        else []
    return View(manifest.sweep_id, manifest.sweep_dir, total, counts, dict(groups), dict(sources),
                running[:rows], failures, elapsed, eta, ended, notes)


def _duration(seconds: Optional[float]) -> str:
    from mfcl_sweeps.launch.progress import format_eta

    return "-" if seconds is None else format_eta(seconds)


def _bar(counts: Counter, total: int, width: int = 12) -> str:
    if total <= 0:
        return ""
    done = round(width * counts[model.COMPLETED] / total)
    bad = round(width * (counts[model.FAILED] + counts[model.CANCELLED]) / total)
    run = round(width * counts[model.RUNNING] / total)
    return ("[green]" + "█" * done + "[/][red]" + "█" * bad + "[/][yellow]" + "▒" * run + "[/]"
            + "·" * max(0, width - done - bad - run))


def render(view: View) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    state = "ended" if view.ended else "running"
    head = Text.from_markup(
        f"[bold]sweep {view.sweep_id}[/] ({state})  {view.sweep_dir}\n"
        f"{view.finished}/{view.total} done: [green]{view.counts[model.COMPLETED]} completed[/], "
        f"[red]{view.counts[model.FAILED]} failed[/], {view.counts[model.CANCELLED]} cancelled, "
        f"[yellow]{view.counts[model.RUNNING]} running[/], "
        + (f"[red]{view.counts[model.LOST]} lost[/] (process gone), " if view.counts[model.LOST] else "")
        + f"{view.counts[model.PENDING]} pending   "
        f"elapsed {_duration(view.elapsed_s)}   ETA {_duration(view.eta_s)}")
    parts: list = [head, *(Text(n, style="dim") for n in view.notes)]
    groups = Table(title="groups", title_justify="left")
    for column in ("group", "completed", "failed", "running", "pending", "total"):
        groups.add_column(column, justify="left" if column == "group" else "right")
    groups.add_column("progress", no_wrap=True, min_width=12)
    for name, c in sorted(view.groups.items()):
        n = sum(c.values())
        groups.add_row(name, str(c[model.COMPLETED]), str(c[model.FAILED]), str(c[model.RUNNING] + c[model.CLAIMED]),
                       str(c[model.PENDING]), str(n), _bar(c, n))
    parts.append(groups)
    if view.sources:
        sources = Table(title="sources", title_justify="left")
        for column in ("host", "backend", "running", "completed", "failed"):
            sources.add_column(column, justify="left" if column in ("host", "backend") else "right")
        for (host, backend), c in sorted(view.sources.items()):
            sources.add_row(host, backend, str(c[model.RUNNING]), str(c[model.COMPLETED]), str(c[model.FAILED]))
        parts.append(sources)
    if view.running:
        running = Table(title=f"running ({view.counts[model.RUNNING] + view.counts[model.CLAIMED]})",
                        title_justify="left")
        for column in ("run", "host", "backend", "elapsed"):
            running.add_column(column)
        for run_id, host, backend, elapsed in view.running:
            running.add_row(run_id, host, backend, _duration(elapsed))
        parts.append(running)
    if view.failures:
        failures = Table(title=f"latest failures ({view.counts[model.FAILED]})", title_justify="left")
        for column in ("run", "host", "error"):
            failures.add_column(column, overflow="fold" if column == "error" else "ellipsis")
        for run_id, host, error in view.failures:
            failures.add_row(run_id, host, error)
        parts.append(failures)
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from mfcl_sweeps.commands.status import open_manifest

    manifest = open_manifest(args.sweep_dir)
    console = Console()
    if args.once:
        view = build_view(manifest, rows=args.rows)
        console.print(render(view))
        return 0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                view = build_view(manifest, rows=args.rows)
                live.update(render(view), refresh=True)
                if view.ended:
                    break
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 130
    console.print(f"\nsweep {view.sweep_id} ended: {view.counts[model.COMPLETED]} completed, "
                  f"{view.counts[model.FAILED]} failed, {view.counts[model.CANCELLED]} cancelled"
                  + (f", {view.counts[model.LOST]} lost (mfcl-sweeps resume runs them again)"
                     if view.counts[model.LOST] else ""))
    return 1 if view.counts[model.FAILED] or view.counts[model.LOST] else 0
