#!/usr/bin/env bash
# Quickstart 2: install electra_jax with its test extras (into a virtualenv) and run the test suite
# on CPU. Extra arguments go to pytest, e.g. `bash test.sh -k objective`.
set -euo pipefail
cd "$(dirname "$0")"
INSTALL_TARGET='.[test]' source scripts/install.sh
exec "$PY" -m pytest tests -q "$@"
