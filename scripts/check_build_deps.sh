#!/usr/bin/env bash
# Checks what building python-ESL needs from the system, before pip tries and fails
# half way with a compiler error: a C++ compiler and Python's C headers (Python.h,
# which python3-venv does not bring on Debian/Ubuntu: python3-dev does). Every
# missing package is named in one apt-get line. Usage: check_build_deps.sh PYTHON
#
# ICALL_SETUP_PYTHON_INCLUDE replaces the header folder Python reports; only the
# tests set it, to point the check at a folder without Python.h.
set -euo pipefail
PY=${1:?usage: check_build_deps.sh PYTHON}
include=${ICALL_SETUP_PYTHON_INCLUDE:-$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')}
missing=()
if ! command -v c++ >/dev/null; then
    echo "python-ESL needs a C++ compiler (c++ not found)" >&2
    missing+=(g++)
fi
if [ ! -f "$include/Python.h" ]; then
    echo "python-ESL compiles against Python.h, which is not in $include" >&2
    missing+=(python3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "install it first (Debian/Ubuntu, as root): apt-get install ${missing[*]}" >&2
    exit 1
fi
