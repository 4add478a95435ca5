"""Expansion speed and memory, each measured in a fresh subprocess (peak RSS is per process):

- `count` of a 1,000,000-run grid (target: < 1 s and < 200 MB), plain and with two exclude
  entries (still arithmetic);
- a 100,000-run grid: time to the first PlannedRun and to all of them (load_spec included).

    python bench/bench_expand.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CASES = {
    "count 1,000,000-run grid": """
        spec = load_spec(None, options=SpecOptions(grid={f"k{i}": list(range(10)) for i in range(6)}))
        n = count(spec)
    """,
    "count 1,000,000-run grid + 2 excludes": """
        spec = load_spec(None, options=SpecOptions(grid={f"k{i}": list(range(10)) for i in range(6)},
                                                   exclude=[{"k0": 1}, {"k1": 2, "k2": 3}]))
        n = count(spec)
    """,
    "first run of a 100,000-run grid": """
        spec = load_spec(None, options=SpecOptions(grid={f"k{i}": list(range(10)) for i in range(5)}))
        n = next(iter_runs(spec)).position + 1
    """,
    "all runs of a 100,000-run grid": """
        spec = load_spec(None, options=SpecOptions(grid={f"k{i}": list(range(10)) for i in range(5)}))
        n = sum(1 for _ in iter_runs(spec))
    """,
}

PROLOGUE = """
import json, resource, time
t0 = time.perf_counter()
from mfcl_sweeps.expand import count, iter_runs
from mfcl_sweeps.spec import SpecOptions, load_spec
t1 = time.perf_counter()
"""
EPILOGUE = """
t2 = time.perf_counter()
print(json.dumps({"n": n, "import_s": t1 - t0, "s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(body: str) -> dict:
    code = PROLOGUE + textwrap.dedent(body) + EPILOGUE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    print(f"{'case':42} {'runs':>9} {'seconds':>8} {'peak RSS MB':>12}  (imports excluded from seconds)")
    for name, body in CASES.items():
        r = measure(body)
        print(f"{name:42} {r['n']:>9} {r['s']:>8.3f} {r['peak_rss_mb']:>12.1f}")


if __name__ == "__main__":
    main()
