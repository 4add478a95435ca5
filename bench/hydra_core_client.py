"""Hydra 1.3's own core tests, run as a client of our plugins (a manual check; see docs/hydra-differences.md).

    git clone --branch 1.3_branch https://github.com/facebookresearch/hydra /tmp/hydra13
    python bench/hydra_core_client.py /tmp/hydra13 [--only baseline|mfcl_local|mfcl_sweeper] [-k EXPR]
        [--baseline-cache FILE]

Three runs of the same Hydra test files (tests/test_hydra.py, tests/test_callbacks.py,
tests/test_examples/): `baseline` (Hydra as installed), `mfcl_local` (`hydra/launcher=mfcl_local`
added to every multirun) and `mfcl_sweeper` (`hydra/sweeper=mfcl`). The overrides are added by a
`sitecustomize` on PYTHONPATH that wraps `Hydra.multirun`, so in-process and subprocess apps get
them alike; it also records which tests start a multirun (PYTEST_CURRENT_TEST), and the counts
are over those tests. A test that picks the injected group itself (`hydra/sweeper=test`) keeps its
choice, as a user's command would, and is listed as not injected. Hydra's tests and examples are
copied to a scratch dir without Hydra's own package, so the installed hydra-core is the one under
test; nothing of Hydra's is committed here.
Prints, per run, passed/total of the multirun tests and the ones that fail where the baseline passes.
The baseline runs every test of those files (about 15 min on 2 cores); the other two only the
multirun tests (about 5 min each).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = ["tests/test_hydra.py", "tests/test_callbacks.py", "tests/test_examples"]
MODES = {"baseline": "", "mfcl_local": "hydra/launcher=mfcl_local", "mfcl_sweeper": "hydra/sweeper=mfcl"}
SITECUSTOMIZE = '''
import os
import sys


def _wrap(module):
    multirun = module.Hydra.multirun
    if getattr(multirun, "mfcl_client", False):
        return

    def recorded_multirun(self, config_name, task_function, overrides, *args, **kwargs):
        # as a user adding hydra/sweeper=mfcl to a command would: a group the test itself picks
        # (a test of its own sweeper) keeps its choice, and the test is listed as not injected
        extra = os.environ.get("MFCL_CLIENT_INJECT", "").split()
        injected = {o.split("=", 1)[0] for o in extra}
        own = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in injected]
        picked = {o.split("=", 1)[0].lstrip("+~") for o in own}
        with open(os.environ["MFCL_CLIENT_RECORD"], "a") as f:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
            f.write(test + ("\\tnot injected: the test picks " + " ".join(own) if own else "") + "\\n")
        extra = [o for o in extra if o.split("=", 1)[0] not in picked]
        return multirun(self, config_name, task_function, list(overrides) + extra, *args, **kwargs)

    recorded_multirun.mfcl_client = True
    module.Hydra.multirun = recorded_multirun


class _WrapOnImport:
    # Hydra is wrapped when it is first imported, not here: importing it before pytest starts
    # would keep pytest from rewriting Hydra's own pytest plugin (an error under -W error).
    def find_spec(self, name, path=None, target=None):
        if name != "hydra._internal.hydra":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _wrap(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("MFCL_CLIENT_RECORD"):
    sys.meta_path.insert(0, _WrapOnImport())
'''


OUTCOMES_PLUGIN = '''
import os


def pytest_configure(config):
    # In pytest's own process Hydra is imported through pytest's rewriting hook (it is a pytest
    # plugin's distribution), ahead of sitecustomize's finder: wrap it here instead.
    import hydra._internal.hydra
    import sitecustomize

    sitecustomize._wrap(hydra._internal.hydra)


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        with open(os.environ["MFCL_CLIENT_OUTCOMES"], "a") as f:
            f.write(f"{report.nodeid}\\t{report.when}\\t{report.outcome}\\n")
'''


def scratch_copy(hydra_src: Path, dest: Path) -> None:
    # ATTRIBUTION marks the root that Hydra's test helpers look for
    for part in ("tests", "examples", "pytest.ini", "build_helpers", "ATTRIBUTION"):
        src = hydra_src / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        elif src.exists():
            shutil.copy(src, dest / part)
    # Hydra 1.3's tests import a name newer pytest no longer has (type hints only): alias it
    basic = dest / "tests" / "test_examples" / "test_tutorials_basic.py"
    if basic.exists():
        basic.write_text(basic.read_text().replace("from _pytest.python_api import RaisesContext",
                                                   "from typing import Any as RaisesContext"))
    (dest / "site").mkdir()
    (dest / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (dest / "site" / "mfcl_client_outcomes.py").write_text(OUTCOMES_PLUGIN)


def run_mode(work: Path, mode: str, k: str, tests: list[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """({test id: passed | failed | skipped}, {id of a test that started a multirun: a note when
    nothing was injected into it, else ""}); `tests`:
    run only these test ids, else every test of FILES (and -k)."""
    record, outcomes_file = work / f"multirun-{mode}.txt", work / f"outcomes-{mode}.tsv"
    record.write_text("")
    outcomes_file.write_text("")
    env = {**os.environ, "PYTHONPATH": str(work / "site"), "MFCL_CLIENT_RECORD": str(record),
           "MFCL_CLIENT_INJECT": MODES[mode], "MFCL_CLIENT_OUTCOMES": str(outcomes_file)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
           "-p", "mfcl_client_outcomes", "--continue-on-collection-errors",
           *(tests or FILES), *(["-k", k] if k else [])]
    subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    outcomes: dict[str, str] = {}
    for line in outcomes_file.read_text().splitlines():
        node, when, outcome = line.split("\t")
        if outcomes.get(node) != "failed":  # a failing setup or teardown fails the test
            outcomes[node] = "failed" if outcome == "failed" else outcome
    started: dict[str, str] = {}
    for line in record.read_text().splitlines():
        test, _, note = line.strip().partition("\t")
        if test and not started.get(test):
            started[test] = note
    return outcomes, started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hydra_src", type=Path, help="a checkout of Hydra's 1.3_branch")
    parser.add_argument("--only", choices=list(MODES), action="append", help="run only these modes")
    parser.add_argument("-k", default="", help="pytest -k expression (e.g. to try one test)")
    parser.add_argument("--baseline-cache", type=Path, help="a JSON file: the baseline's results are read from it "
                        "when it exists, else written to it (reruns then take the mfcl modes' time only)")
    args = parser.parse_args(argv)
    modes = args.only or list(MODES)
    if "baseline" not in modes:
        modes.insert(0, "baseline")  # the set of multirun tests, and what passes without us
    with tempfile.TemporaryDirectory(prefix="hydra-client-") as tmp:
        work = Path(tmp)
        scratch_copy(args.hydra_src, work)
        if args.baseline_cache and args.baseline_cache.exists():
            cached = json.loads(args.baseline_cache.read_text())
            results = {"baseline": (cached["outcomes"], cached["multirun"])}
        else:
            results = {"baseline": run_mode(work, "baseline", args.k)}
            if args.baseline_cache:
                args.baseline_cache.write_text(json.dumps(dict(zip(("outcomes", "multirun"), results["baseline"]))))
        base, multirun_tests = results["baseline"]
        # the other modes run only the tests that start a multirun (a third of the time)
        results.update({mode: run_mode(work, mode, args.k, sorted(multirun_tests))
                        for mode in modes if mode != "baseline"})
    print(f"Hydra core tests that start a multirun: {len(multirun_tests)}")
    for mode in modes:
        outcomes, started = results[mode]
        passed = sorted(t for t in multirun_tests if outcomes.get(t) == "passed")
        print(f"{mode:>13}: {len(passed)}/{len(multirun_tests)} passed")
        if mode != "baseline":
            for test in sorted(t for t in multirun_tests if base.get(t) == "passed" and outcomes.get(t) != "passed"):
                print(f"{'':>15}fails: {test}")
            for test in sorted(t for t in multirun_tests if started.get(t)):
                print(f"{'':>15}{outcomes.get(test, '?')}, {started[test]}: {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
