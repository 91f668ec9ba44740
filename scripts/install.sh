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
# Editable install (code edits need no reinstall). pip takes 10-30 s even when everything is there,
# so it is skipped when this checkout, its setup.py and the install target are what was installed.
STAMP="$VENV/.electra_jax_install"
TARGET="${INSTALL_TARGET:-.[test]}"
stamp() { echo "$(pwd) $1 $(cksum < setup.py)"; }
installed_here() {  # the venv's electra_jax (imported away from this directory) is this checkout's
  (cd / && "$PY" -c 'import os, sys, electra_jax; sys.exit(os.path.dirname(os.path.realpath(
      electra_jax.__file__)) != os.path.realpath(sys.argv[1]))' "$OLDPWD/electra_jax") 2>/dev/null
}
if ! grep -qxF "$(stamp "$TARGET")" "$STAMP" 2>/dev/null || ! installed_here; then
  "$PY" -m pip install -q --disable-pip-version-check -e "$TARGET" >&2
  stamp "$TARGET" > "$STAMP"
  if [ "$TARGET" = '.[test]' ]; then stamp '.' >> "$STAMP"; fi
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
