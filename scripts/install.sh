# Sourced by demo.sh and test.sh: makes (or reuses) a virtualenv and installs electra_jax into it
# ($INSTALL_TARGET: '.' for the demo, '.[test]' with the test extras). Sets $PY to its python.
VENV="${ELECTRA_JAX_VENV:-$HOME/.cache/electra_jax_venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
PY="$VENV/bin/python"
# Editable install; fast when everything is already there.
"$PY" -m pip install -q --disable-pip-version-check -e "${INSTALL_TARGET:-.[test]}" >&2
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
