#!/usr/bin/env bash
# The lint gates, run by .ci/run before the tests: ruff (pyflakes, pycodestyle, import order)
# and the import contracts of .importlinter (the one-way flow, no cycles, independent backends).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ruff check .
lint-imports
