#!/usr/bin/env bash
# Create the virtual environment that runs py4DSTEM, the peer of mspt's multislice ptychography benchmark.
#
# py4DSTEM pins numpy<2, so it lives in its own environment and is never a dependency of mspt: our side
# (benchmarks/peers/py4dstem.py) writes a dataset to an .npz file and runs run_py4dstem_msp.py with this
# environment's python as a subprocess.
#
# Usage: bash benchmarks/peers/setup_py4dstem_venv.sh [VENV_DIR]
#   VENV_DIR        default: .venv-py4dstem at the repository root (git-ignored); the driver looks there
#                   unless MSPT_PY4DSTEM_PYTHON names another interpreter.
#   PYTHON          the interpreter to build the venv from (default: python3).
#   PY4DSTEM_SPEC   the pip requirement for py4DSTEM (default: the version the benchmark was tuned on).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-py4dstem}"
python="${PYTHON:-python3}"
spec="${PY4DSTEM_SPEC:-py4DSTEM==0.14.18}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $($python --version 2>&1)"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# py4DSTEM brings numpy<2, scipy, h5py, numba, scikit-image, matplotlib, emdfile and friends; CPU only
# (cupy is optional and not installed: the comparison runs both codes on the CPU unless told otherwise).
"$venv/bin/python" -m pip install --quiet "$spec"
"$venv/bin/python" - <<'PY'
import numpy, py4DSTEM
from py4DSTEM.process.phase import MultislicePtychography  # noqa: F401  (the class the benchmark runs)
print(f"py4DSTEM {py4DSTEM.__version__} with numpy {numpy.__version__}: ready")
PY
