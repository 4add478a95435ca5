"""reports/index.html in headless Chromium (real browser, no network): tables, figures, sorting,
pagination, run links, no console errors; a screenshot is kept in the test's tmp dir."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from chromium import Browser
from test_aggregate import BUDGET, record, write_manifest, write_run

from mfcl_sweeps.report import write_report

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def report(tmp_path):
    """2 lrs x 2 optimizers x 3 seeds with telemetry, in two groups, plus a failed run."""
    root = tmp_path / "sweep"
    runs, i = [], 0
    for group, opt in (("sgd", "sgd"), ("adam", "adam")):
        for lr in (0.001, 0.1):
            for seed in range(3):
                write_run(root / str(i), lr=lr * (1 + seed / 10) * (2 if opt == "adam" else 1))
                (root / str(i) / ".hydra").mkdir()
                (root / str(i) / ".hydra" / "config.yaml").write_text(f"lr: {lr}\n")
                runs.append(record(i, root / str(i), group=group, budget=BUDGET,
                                   overrides=[f"lr={lr}", f"opt={opt}", f"seed={seed}"]))
                i += 1
    runs.append(record(i, root / "x", status="failed", overrides=["lr=0.5", "opt=sgd", "seed=0"],
                       error="Traceback ...\nRuntimeError: diverged at lr=0.5"))
    write_manifest(root, runs)
    (root / "logs" / "runs").mkdir(parents=True)
    (root / "logs" / "runs" / "00000_sgd.log").write_text("started\n")
    return write_report(str(root)), len(runs)


def test_page_does_not_reference_the_network(report):
    files, _ = report
    text = Path(files.html).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", text)


def test_index_html_in_headless_chromium(report, tmp_path):
    files, n_runs = report
    with Browser(tmp_path) as browser:
        page = browser.open(Path(files.html).as_uri())
        shot = page.screenshot(tmp_path / "index.png")
        tables = page.eval("[...document.querySelectorAll('div.mfcl-table')].map(d => d.id + ':' + "
                           "d.querySelectorAll('table').length)")
        assert tables == ["table-best:1", "table-failures:1", "table-configs:1", "table-runs:1"]
        assert page.eval("document.querySelectorAll('figure.plot svg').length") == len(files.plots) == 6
        widths = page.eval("[...document.querySelectorAll('figure.plot svg')]"
                           ".map(s => s.getBoundingClientRect().width)")
        assert min(widths) >= 600
        assert page.eval("document.querySelectorAll('#table-runs tbody tr').length") == n_runs
        assert page.eval("document.querySelector('#table-runs .pager span').textContent") == \
            f"page 1 of 1 ({n_runs} rows)"
        failures = page.eval("document.querySelector('#table-failures tbody').textContent")
        assert "RuntimeError: diverged at lr=0.5" in failures
        links = page.eval("[...document.querySelectorAll('#table-runs tbody tr')][0].querySelectorAll('a')"
                          ".length ? [...[...document.querySelectorAll('#table-runs tbody tr')][0]"
                          ".querySelectorAll('a')].map(a => a.getAttribute('href')) : []")
        assert links == ["../logs/runs/00000_sgd.log", "../0/.hydra/config.yaml", "../0/"]

        # sort the runs table by accuracy: ascending, then descending (empty cells last)
        column = page.eval("[...document.querySelectorAll('#table-runs th')]"
                           ".findIndex(th => th.textContent == 'accuracy')")
        assert column > 0
        first = (f"[...document.querySelectorAll('#table-runs tbody tr')].map(tr => tr.cells[{column}].textContent)"
                 ".filter(t => t !== '')")
        page.eval(f"document.querySelectorAll('#table-runs th')[{column}].click()")
        ascending = [float(v) for v in page.eval(first)]
        assert ascending == sorted(ascending) and len(ascending) == n_runs - 1  # the failed run has no value
        last = f"[...document.querySelectorAll('#table-runs tbody tr')].pop().cells[{column}].textContent"
        assert page.eval(last) == ""
        page.eval(f"document.querySelectorAll('#table-runs th')[{column}].click()")
        assert [float(v) for v in page.eval(first)] == sorted(ascending, reverse=True)
        assert page.console == []
    assert shot.stat().st_size > 20_000


def test_console_errors_are_seen(tmp_path):
    """The check above can fail: a page with a script error is reported."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('broken'); missing();</script></body></html>")
    with Browser(tmp_path) as browser:
        console = browser.open(bad.as_uri()).console
    assert console[0] == "console.error: broken" and console[1].startswith("exception: ReferenceError")


@pytest.mark.slow
def test_index_html_with_10000_runs_stays_usable(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_aggregate", REPO / "bench" / "bench_aggregate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = tmp_path / "sweep"
    bench.make_sweep(str(root), 10_000, 20)
    files = write_report(str(root))
    with Browser(tmp_path, timeout=240) as browser:
        page = browser.open(Path(files.html).as_uri())
        page.screenshot(tmp_path / "index-10000.png")
        assert page.eval("document.querySelectorAll('#table-runs tbody tr').length") == 50
        assert page.eval("document.querySelector('#table-runs .pager span').textContent") == \
            "page 1 of 200 (10000 rows)"
        page.eval("document.querySelectorAll('#table-runs .pager button')[1].click()")
        assert page.eval("document.querySelector('#table-runs tbody tr').cells[0].firstChild.textContent") == \
            "00050_default_lr-0.1"  # run 50: lr index 50 % 3 = 2
        assert page.eval("document.querySelectorAll('figure.plot svg').length") == len(files.plots)
        assert page.eval("document.querySelectorAll('#table-failures tbody tr').length") == 50  # 200 failed, paged
        assert page.console == []
