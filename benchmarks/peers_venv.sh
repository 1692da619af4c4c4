#!/usr/bin/env bash
# Make the benchmark venv that benchmarks/peers.py runs every tool in: the peers a user would
# pick instead of poolparty (dask-jobqueue with distributed, submitit) and poolparty itself,
# installed editable from this checkout. A venv of its own, so that the peers' dependencies
# never land in the interpreter the tests and the other helpers share.
#
#     bash benchmarks/peers_venv.sh [VENV_DIR] [CHECKOUT]
#
# VENV_DIR defaults to benchmarks/.venv (gitignored), CHECKOUT to the repository holding this
# script. Idempotent: a second run reuses the venv and only installs what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="${2:-$(cd "$here/.." && pwd)}"
venv="${1:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$venv/bin/python" -I -c "import dask_jobqueue, distributed, submitit" 2>/dev/null; then
    echo "installing dask-jobqueue, distributed, submitit"
    "${pip[@]}" dask-jobqueue distributed submitit
fi
installed_from="$("$venv/bin/python" -I -c 'import poolparty, os; print(os.path.dirname(os.path.dirname(poolparty.__file__)))' 2>/dev/null || true)"
if [ "$installed_from" != "$checkout" ]; then
    echo "installing poolparty from $checkout (editable)"
    "${pip[@]}" -e "$checkout"
fi

"$venv/bin/python" -I - <<'EOF'
import importlib.metadata as metadata
for name in ("poolparty", "dask-jobqueue", "distributed", "submitit"):
    print(f"  {name:14} {metadata.version(name)}")
EOF
cat <<EOF
ready: $venv
use:   $venv/bin/python $here/peers.py --help
       $venv/bin/python $here/peers.py --scheduler slurm --workloads uneven pareto trivial --repeat 3
EOF
