"""`reports/index.html`: one self-contained page (no network, no server): sortable, paginated
tables built by a small inline script from JSON embedded in the page, and the figures as
inline SVG. While the sweep runs the page reloads itself every `REFRESH_S` seconds (the live
report is rewritten as runs finish); the final page does not.
"""
from __future__ import annotations

import html
import io
import json
import math
import os
import time
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from mfcl_sweeps.report.tables import cell, header

REFRESH_S = 15
PAGE_ROWS = 50

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}
td,th{border:1px solid #ddd;padding:2px 6px;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none;white-space:nowrap}th.asc:after{content:" \\25B2"}
th.desc:after{content:" \\25BC"}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pager{font-size:13px}.pager button{margin:0 .3em}figure{margin:1em 0}figure svg{max-width:100%;height:auto}
.links a{font-size:11px;margin-left:.4em;color:#666}.live{background:#fff6d5;padding:.4em}
.wrap{overflow-x:auto}
"""

SCRIPT = """
function mfclTable(el) {
  const data = JSON.parse(document.getElementById(el.dataset.source).textContent);
  const size = parseInt(el.dataset.page, 10);
  let rows = data.rows.slice(), page = 0, sortCol = -1, asc = true;
  const table = document.createElement('table'), pager = document.createElement('div');
  pager.className = 'pager';
  const head = table.createTHead().insertRow();
  data.columns.forEach((name, i) => {
    const th = document.createElement('th');
    th.textContent = name;
    th.addEventListener('click', () => { asc = sortCol === i ? !asc : true; sortCol = i; sort(); draw(); });
    head.appendChild(th);
  });
  const body = table.createTBody();
  function key(v) { return v === null ? null : (Array.isArray(v) ? v[1] : v); }
  function sort() {
    rows.sort((a, b) => {
      const x = key(a[sortCol]), y = key(b[sortCol]);
      if (x === y) return 0;
      if (x === null || x === '') return 1;
      if (y === null || y === '') return -1;
      return (x < y ? -1 : 1) * (asc ? 1 : -1);
    });
    page = 0;
    head.querySelectorAll('th').forEach((th, i) => th.className = i === sortCol ? (asc ? 'asc' : 'desc') : '');
  }
  function draw() {
    body.textContent = '';
    const pages = Math.max(1, Math.ceil(rows.length / size));
    rows.slice(page * size, (page + 1) * size).forEach(row => {
      const tr = body.insertRow();
      row.forEach((v, i) => {
        const td = tr.insertCell();
        if (Array.isArray(v)) { td.textContent = v[0]; if (typeof v[1] === 'number') td.className = 'num'; }
        else if (v !== null) td.textContent = v;
        const links = data.links && i === 0 ? data.links[row[0]] : null;
        if (links) {
          const span = document.createElement('span');
          span.className = 'links';
          links.forEach(([label, href]) => {
            const a = document.createElement('a'); a.href = href; a.textContent = label; span.appendChild(a);
          });
          td.appendChild(span);
        }
      });
    });
    pager.textContent = '';
    const prev = document.createElement('button'), next = document.createElement('button');
    prev.textContent = '\\u2190 prev'; next.textContent = 'next \\u2192';
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
    prev.onclick = () => { page--; draw(); }; next.onclick = () => { page++; draw(); };
    const info = document.createElement('span');
    info.textContent = `page ${page + 1} of ${pages} (${rows.length} rows)`;
    pager.append(prev, info, next);
  }
  el.append(table, pager);
  draw();
}
document.querySelectorAll('div.mfcl-table').forEach(mfclTable);
"""


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def table_json(frame: pd.DataFrame, links: Optional[dict] = None) -> str:
    """{columns, rows, links}: a cell is its text, or [text, number] when it sorts as a number."""
    columns = list(frame.columns)
    formatted = []
    for column in columns:
        raw = [_json_value(v) for v in frame[column].astype(object).tolist()]
        text = [cell(column, v) for v in raw]
        formatted.append([[t, r] if isinstance(r, (int, float)) and not isinstance(r, bool) else
                          (t if r is not None else None) for t, r in zip(text, raw)])
    rows = [list(row) for row in zip(*formatted)] if formatted else []
    data = {"columns": [header(c) for c in columns], "rows": rows, "links": links or {}}
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def run_links(runs: pd.DataFrame, sweep_dir: str, reports_dir: str) -> dict:
    """run id -> [(label, relative href)] for its log, Hydra config and job dir, where they exist
    (one directory listing for the logs; job dirs under the sweep dir are linked without a stat)."""
    from mfcl_sweeps.job.jobspec import log_path_for

    logs_dir = os.path.dirname(log_path_for(sweep_dir, "x"))
    try:
        logs = set(os.listdir(logs_dir))
    except OSError:
        logs = set()
    links = {}
    for run_id, job_dir in zip(runs["run_id"].astype(object), runs["job_dir"].astype(object)):
        found = []
        if f"{run_id}.log" in logs:
            found.append(("log", os.path.join(logs_dir, f"{run_id}.log")))
        if job_dir and os.path.isdir(job_dir):
            config = os.path.join(job_dir, ".hydra", "config.yaml")
            if os.path.exists(config):
                found.append(("config", config))
            found.append(("dir", job_dir))
        if found:
            links[str(run_id)] = [[label, _relative(path, reports_dir) + ("/" if label == "dir" else "")]
                                  for label, path in found]
    return links


def _relative(path: str, start: str) -> str:
    parent = os.path.dirname(start.rstrip("/"))
    if path.startswith(parent + "/"):  # the usual case, without os.path.relpath's cost
        return "../" + path[len(parent) + 1:]
    return os.path.relpath(path, start)


def svg(fig: Any) -> str:
    """The figure as inline SVG (without the XML prolog)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def page(*, title: str, facts: Sequence[str], sections: Sequence[tuple[str, str]], live: bool) -> str:
    """The whole document; `sections` are (heading, inner HTML)."""
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if live else ""
    notice = (f'<p class="live">The sweep is running: this page is rewritten as runs finish and reloads '
              f"every {REFRESH_S} s.</p>" if live else "")
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{inner}</section>\n" for h, inner in sections)
    items = "".join(f"<li>{f}</li>" for f in facts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{refresh}'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>{notice}<ul>{items}</ul>\n{body}"
            f"<p><small>generated {time.strftime('%Y-%m-%d %H:%M:%S')} by mfcl-sweeps</small></p>"
            f"<script>{SCRIPT}</script></body></html>\n")


def table_section(name: str, frame: pd.DataFrame, links: Optional[dict] = None, page_rows: int = PAGE_ROWS) -> str:
    return (f'<script type="application/json" id="data-{name}">{table_json(frame, links)}</script>'
            f'<div class="wrap"><div class="mfcl-table" id="table-{name}" data-source="data-{name}" '
            f'data-page="{page_rows}"></div></div>')


def figure(title: str, svg_text: str) -> str:
    return f'<figure class="plot" title="{html.escape(title)}">{svg_text}</figure>'
