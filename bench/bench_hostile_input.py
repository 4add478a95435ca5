"""How fast each hostile sweep file and option is refused (target: < 2 s of CPU each), the speed
half of tests/test_hostile_input.py and tests/test_hostile_options.py, whose tests only guard
against a hang. Each case is refused in-process by `mfcl-sweeps count` or the option parser.

    python bench/bench_hostile_input.py
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_hostile_input import CORPUS  # noqa: E402  the corpus lives beside the tests that check its lines
from test_hostile_options import CASES, CONFS, NEEDS  # noqa: E402

from mfcl_sweeps.cli import main as cli_main  # noqa: E402
from mfcl_sweeps.errors import OptionError  # noqa: E402
from mfcl_sweeps.options import parse_options  # noqa: E402

TARGET_S = 2.0


def refuse_file(text: str, overrides: list) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(text)
        t0 = time.process_time()
        with contextlib.redirect_stderr(io.StringIO()):
            assert cli_main(["count", str(path), *overrides]) == 2
        return time.process_time() - t0


def refuse_option(launcher: str, key: str, value: object) -> float:
    t0 = time.process_time()
    try:
        parse_options(CONFS[launcher], {**NEEDS.get(launcher, {}), key: value}, launcher)
    except OptionError:
        return time.process_time() - t0
    raise AssertionError(f"{launcher} {key}={value!r} was accepted")


def main() -> None:
    times = {f"file {name}": refuse_file(text, overrides) for name, text, overrides, _ in CORPUS}
    times.update({f"option {launcher} {key}={value}": refuse_option(launcher, key, value)
                  for launcher, key, value in CASES})
    slowest = sorted(times.items(), key=lambda kv: -kv[1])
    print(f"{'case (10 slowest of ' + str(len(times)) + ')':60} {'CPU s':>7}")
    for name, spent in slowest[:10]:
        print(f"{name:60} {spent:>7.3f}")
    over = [name for name, spent in times.items() if spent >= TARGET_S]
    print(f"{len(times) - len(over)}/{len(times)} refused in < {TARGET_S} s of CPU", *(["over:", over] if over else []))


if __name__ == "__main__":
    main()
