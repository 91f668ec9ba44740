#!/usr/bin/env bash
# Quickstart 1: install electra_jax (into a virtualenv) and pre-train a tiny ELECTRA on the embedded
# offline corpus (Python's own documentation). Extra arguments go to electra_jax.main, e.g.
#   bash demo.sh --config.num_train_steps=100
# Environment: ELECTRA_JAX_VENV (default ~/.cache/electra_jax_venv), WORKDIR (default /tmp/electra_demo).
set -euo pipefail
cd "$(dirname "$0")"
INSTALL_TARGET='.' source scripts/install.sh
WORKDIR="${WORKDIR:-/tmp/electra_demo}"
exec "$PY" -m electra_jax.main --config=configs/demo.py --workdir="$WORKDIR" "$@"
