"""Per-source lines for `mfcl-sweeps status` of a sweep run with mfcl_pool: runs by state from
the journal (each record's `source`), busy/total slots and health from the pool's last lines in
logs/source_utilization.log and logs/health_status.log (what the driver last saw)."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


def _last_by_source(path: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            fields = {k: v.strip("'\"") for k, v in _FIELD.findall(line)}
            if "source" in fields:
                out[fields["source"]] = fields
    return out


def sources_report(sweep_dir: str, records: Iterable[Any]) -> list[dict]:
    """One row per source that ran a run of this sweep (empty for a sweep without the pool)."""
    states: dict[str, Counter] = defaultdict(Counter)
    kinds: dict[str, str] = {}
    for rec in records:
        extra = getattr(rec, "extra", None) or {}
        if extra.get("source"):
            states[extra["source"]][rec.status] += 1
            kinds[extra["source"]] = extra.get("source_kind") or kinds.get(extra["source"], "")
    logs = Path(sweep_dir) / "logs"
    util = _last_by_source(logs / "source_utilization.log")
    health = _last_by_source(logs / "health_status.log")
    rows = []
    for name in sorted(set(states) | set(util)):
        u, h = util.get(name, {}), health.get(name, {})
        state = "disabled" if u.get("enabled") == "no" else "enabled"
        if h.get("event") == "disabled" and u.get("enabled") != "yes":
            state = f"disabled: {h.get('reason', '')}"
        busy, slots = (int(u[k]) if k in u else None for k in ("busy", "slots"))
        rows.append({"source": name, "kind": kinds.get(name, ""), "runs": dict(states[name]), "busy": busy,
                     "slots": slots, "health": state})
    return rows


def render_sources(console: Any, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="sources")
    for col in ("source", "kind", "runs", "busy/slots", "health"):
        table.add_column(col)
    for r in rows:
        runs = ", ".join(f"{n} {s}" for s, n in sorted(r["runs"].items())) or "-"
        slots = f"{r['busy']}/{r['slots']}" if r["slots"] is not None else "-"
        table.add_row(r["source"], r["kind"] or "-", runs, slots, r["health"])
    console.print(table)
