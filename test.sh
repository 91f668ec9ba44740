#!/usr/bin/env bash
# Quickstart 2: install electra_jax with its test extras (into a virtualenv) and run the test suite
# on CPU, in parallel workers (pytest-xdist; ELECTRA_JAX_TEST_WORKERS, default: the cores, at most
# 4: most tests spend their time compiling, which XLA does on one thread). Extra arguments go to
# pytest, e.g. `bash test.sh -k objective`. --dist loadgroup: tests marked with one xdist_group
# (they share an expensive module fixture) run on one worker.
set -euo pipefail
cd "$(dirname "$0")"
INSTALL_TARGET='.[test]' source scripts/install.sh
CORES="$(nproc 2>/dev/null || echo 2)"
WORKERS="${ELECTRA_JAX_TEST_WORKERS:-$(( CORES < 4 ? CORES : 4 ))}"
exec "$PY" -m pytest tests -q -n "$WORKERS" --dist loadgroup "$@"
