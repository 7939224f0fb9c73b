#!/usr/bin/env bash
# Creates .venv, builds python-ESL and installs icall (editable) with its test tools.
# A second run is a no-op unless pyproject.toml changed since the last install.
#
# python-ESL 1.4.18 is FreeSWITCH's libesl wrapped by SWIG; its setup.py passes
# `-classic`, which SWIG >= 4.0 removed. SWIG 3.0.12 from PyPI still has it, so it is
# installed into the venv first and python-ESL is built without build isolation
# (an isolated build would not see that swig on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
stamp="$VENV/.icall-installed"

if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    exit 0
fi

"$PY" - <<'PYCHK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"icall needs Python >= 3.11, found {sys.version.split()[0]}")
PYCHK

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || {
        echo "could not create $VENV: install python3-venv (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    }
fi
export PATH="$PWD/$VENV/bin:$PATH"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import ESL" 2>/dev/null; then
    bash scripts/check_build_deps.sh "$VENV/bin/python"
    pip install "setuptools<70" wheel "swig==3.0.12"
    pip install --no-build-isolation "python-ESL==1.4.18"
fi
pip install -e ".[test]"
touch "$stamp"
