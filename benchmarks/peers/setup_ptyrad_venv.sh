#!/usr/bin/env bash
# Create the virtual environment that runs PtyRAD, a peer of mspt's multislice ptychography benchmark.
#
# PtyRAD (PyTorch) lives in its own environment and is never a dependency of mspt: our side
# (benchmarks/peers/ptyrad.py) writes a dataset to an .npz file and runs run_ptyrad_msp.py with this
# environment's python as a subprocess.
#
# Usage: bash benchmarks/peers/setup_ptyrad_venv.sh [VENV_DIR]
#   VENV_DIR      default: .venv-ptyrad at the repository root (git-ignored); the driver looks there
#                 unless MSPT_PTYRAD_PYTHON names another interpreter.
#   PYTHON        the interpreter to build the venv from (default: python3).
#   PTYRAD_SPEC   the pip requirement for PtyRAD (default: the version the benchmark was tuned on).
#   TORCH_SPEC    the pip requirement for torch (default: torch==2.13.0). Pin a CPU build: an unpinned
#                 `torch` from PyPI is the multi-GB CUDA build. Where PyTorch's CPU wheel index is at hand,
#                 point PIP_EXTRA_INDEX_URL at it and pip takes torch and torchvision from there.
#
# torchvision. PtyRAD requires torchvision, and imports only torchvision.transforms.functional.gaussian_blur
# (its obj_rblur constraint, detector_blur_std, and the loss_simlar blur). PyPI's torchvision wheels are
# CUDA builds: over a CPU torch their compiled ops cannot load and `import torchvision` fails ("operator
# torchvision::nms does not exist"). When that happens this script replaces torchvision with a stand-in
# package whose gaussian_blur raises a RuntimeError, so PtyRAD imports, and any setting that would blur
# stops loudly instead of running different numerics. The benchmark's settings use none of the three.
# A real CPU torchvision, where one installs, is kept as it is.
#
# Python. PtyRAD 1.0.0 says it needs Python >= 3.10, but one f-string in ptyrad/plotting/basic.py (a plot
# title, never drawn by the benchmark) nests quotes the way only Python >= 3.12 parses. Under an older
# Python this script swaps those inner quotes (same string, same behaviour) so the package imports; with
# Python >= 3.12 nothing is changed. (The CPU torch wheel at hand is built for Python 3.11.)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-ptyrad}"
python="${PYTHON:-python3}"
spec="${PTYRAD_SPEC:-ptyrad==1.0.0}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $($python --version 2>&1)"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch pinned in the same command, so PtyRAD's own `torch` requirement cannot pull another build.
"$venv/bin/python" -m pip install --quiet "$torch_spec" "$spec"

"$venv/bin/python" - <<'PY'
import pathlib, sys, sysconfig
if sys.version_info < (3, 12):
    path = pathlib.Path(sysconfig.get_paths()["purelib"]) / "ptyrad" / "plotting" / "basic.py"
    text = path.read_text()
    nested = "{lr_iters['niter'][-1]}"
    if nested in text:
        path.write_text(text.replace(nested, '{lr_iters["niter"][-1]}'))
        print(f"{path}: inner f-string quotes swapped for Python {sys.version.split()[0]}")
    compile(path.read_text(), str(path), "exec")  # any other 3.12-only syntax stops the script here
PY

if ! "$venv/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    echo "torchvision does not load over this torch (a CUDA build of its ops): installing a stand-in"
    "$venv/bin/python" -m pip uninstall --quiet --yes torchvision
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$site/torchvision/transforms"
    cat >"$site/torchvision/__init__.py" <<'PY'
"""Stand-in for torchvision in mspt's PtyRAD benchmark venv (setup_ptyrad_venv.sh): PyPI's torchvision is a
CUDA build that cannot load over the CPU torch. Only the name PtyRAD imports exists, and it refuses to run."""

__version__ = "stand-in"
STAND_IN = True
PY
    : >"$site/torchvision/transforms/__init__.py"
    cat >"$site/torchvision/transforms/functional.py" <<'PY'
def gaussian_blur(img, kernel_size, sigma=None):
    raise RuntimeError(
        "torchvision is a stand-in in this venv (no CPU build of it was installable): PtyRAD's blurs "
        "(obj_rblur, detector_blur_std, loss_simlar) are unavailable; install a CPU torchvision to use them"
    )
PY
fi

"$venv/bin/python" - <<'PY'
import numpy, torch, torchvision, ptyrad
from ptyrad.solver import PtyRADSolver  # noqa: F401  (the class the benchmark runs)
print(f"PtyRAD {ptyrad.__version__} with torch {torch.__version__} (CUDA: {torch.version.cuda}), "
      f"torchvision {torchvision.__version__}, numpy {numpy.__version__}: ready")
PY
