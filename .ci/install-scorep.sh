#!/usr/bin/env bash
# Real Score-P for the tests: Score-P 8.4 at $SCOREP_PREFIX (installed from ../shared/scorep when
# it is missing and the installer is there), the system libraries the Score-P Python bindings
# link their init library against, and the bindings built into the virtual environment.
# Without a Score-P installation it says so and exits 0: the tests then skip the real-Score-P
# tier and their summary says why.
set -euo pipefail
python=${1:?usage: install-scorep.sh VENV_PYTHON}
prefix=${SCOREP_PREFIX:-/opt/scorep}
shared=${SHARED:-../shared}

if [ ! -x "$prefix/bin/scorep-config" ] && [ -x "$shared/scorep/install.sh" ]; then
  bash "$shared/scorep/install.sh"
fi
if [ ! -x "$prefix/bin/scorep-config" ]; then
  echo "install-scorep: no Score-P at $prefix and no installer at $shared/scorep: the real-Score-P tests will be skipped"
  exit 0
fi

# the bindings link their init library with -lunwind -lbfd (Score-P's unwinding and addr2line)
need="libunwind-dev binutils-dev"
missing=$(for p in $need; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
  else
    echo "install-scorep: the Score-P bindings need $missing (apt-get install $missing as root)" >&2
  fi
fi

if ! "$python" -c "import scorep._bindings" 2>/dev/null; then
  PATH="$prefix/bin:$PATH" "$python" -m pip install --quiet scorep
fi
echo "install-scorep: Score-P $("$prefix/bin/scorep-config" --version | tr -d '\n') at $prefix, bindings $("$python" -c 'import scorep; print(scorep.__version__)') in $("$python" -c 'import sys; print(sys.prefix)')"
