#!/usr/bin/env bash
# One entry point for a fresh machine: builds (or reuses) a cached virtual environment, then
#   bash tools/bootstrap.sh demo [vidssl demo options]   pretrain + evaluate on the built-in data
#   bash tools/bootstrap.sh test [pytest options]        ruff, mypy and the whole test suite
#   bash tools/bootstrap.sh shell                        print the environment's path and stop
# The environment is keyed by pyproject.toml, the Python version and the machine, so it is rebuilt
# only when the dependencies change. Set VIDSSL_ENV_CACHE to move it, PYTHON to pick the interpreter.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
key=$({ cat "$root/pyproject.toml" "$root/tools/bootstrap.sh"; "$py" -c 'import sys; print(sys.version)'; uname -m; } \
      | sha256sum | cut -c1-16)
cache=${VIDSSL_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vidssl/envs}
venv=$cache/$key

if [ ! -f "$venv/.complete" ]; then
    echo "[bootstrap] building environment $venv (torch and torchvision come as a matched pair: several GB)"
    rm -rf "$venv"
    mkdir -p "$cache"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
    # torch and torchvision in one resolver call so pip picks a pair that imports together.
    "$venv/bin/python" -m pip install --quiet "torch>=2.4" "torchvision>=0.19"
    "$venv/bin/python" -m pip install --quiet -e "$root[test]"
    "$venv/bin/python" -c "import torch, torchvision; print('[bootstrap] torch', torch.__version__, 'torchvision', torchvision.__version__)"
    touch "$venv/.complete"
else
    echo "[bootstrap] reusing environment $venv"
fi
# The environment may be shared by several checkouts: point the editable install at this one.
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" >/dev/null
export PATH="$venv/bin:$PATH"
cd "$root"

cmd=${1:-test}
shift || true
case "$cmd" in
    demo)
        exec vidssl demo "$@"
        ;;
    test)
        echo "[bootstrap] ruff"; ruff check vidssl tests tools datasets
        echo "[bootstrap] mypy"; mypy
        echo "[bootstrap] pytest (slow tests included)"
        # pytest exits 5 when it collects nothing; set -e makes that a failure.
        VIDSSL_RUN_SLOW=1 python -m pytest "$@"
        ;;
    shell)
        echo "$venv"
        ;;
    *)
        echo "usage: bash tools/bootstrap.sh {demo|test|shell} [args]" >&2
        exit 2
        ;;
esac
