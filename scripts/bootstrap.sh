#!/usr/bin/env bash
# Create (or reuse) ./.venv and install this package into it, editable, plus the dev group when asked.
# Sourced by scripts/quickstart and .ci/run so both set up a fresh machine the same way.
# Usage: source scripts/bootstrap.sh [--dev] [EXTRAS]   (EXTRAS e.g. "quantize,serve")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev=0
extras=""
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) extras="$arg" ;;
  esac
done
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "+ python3 -m venv $root/.venv" >&2
  python3 -m venv "$root/.venv"
fi
py="$root/.venv/bin/python"
"$py" -m pip install -q --upgrade "pip>=25.1"
target="$root"
[ -n "$extras" ] && target="$root[$extras]"
echo "+ pip install -e $target" >&2
# setuptools reports every strict editable install with a screenful of information ("Editable installation.
# ... performed using the auxiliary directory"); that one message is filtered, every other warning shows.
PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
  "$py" -m pip install -q -e "$target" --config-settings editable_mode=strict
if [ "$dev" = 1 ]; then
  echo "+ pip install --group dev" >&2
  (cd "$root" && "$py" -m pip install -q --group dev)
fi
export PATH="$root/.venv/bin:$PATH"
