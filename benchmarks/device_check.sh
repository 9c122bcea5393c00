#!/usr/bin/env bash
# The GPU check of issue 14, for a fresh GPU machine handed only this repository; about 8 minutes at most.
#
#   OUT=/some/folder bash benchmarks/device_check.sh        # writes $OUT/device_check.json (+ logs)
#   DEVICE=cpu QUICK=1 OUT=/tmp/dc bash benchmarks/device_check.sh   # dry run on a CPU (no gpu tests)
#
# 1. Python: $PYTHON if set, else the first of python3/python whose torch sees CUDA; if none
#    does, a venv in /tmp with `pip install torch` (needs the network).
# 2. The package into /tmp/ctr-site (beside that Python's own packages): the missing requirements
#    (diffusers, pydicom, nibabel, pylibjpeg...) from wheels carried in .whl/ when that folder
#    exists (offline machines; see WHEELS below), else from PyPI; then this repository, built
#    without dependencies or network (setuptools), so presets and the shipped prior resolve.
# 3. pytest -m gpu (the CUDA projector tests), at most a third of BUDGET_S (150 s).
# 4. benchmarks/device_check.py: CUDA vs CPU projector (values, adjoint; float32 and bfloat16),
#    projector/TV/ReSample seconds per slice at batch 1/8/32 with a profile of where ReSample's
#    time goes; its JSON is rewritten after every stage, so a timeout keeps what was measured.
#
# Every step has its own time limit and the total stays under 8 minutes. Exit status: 0 when
# the tests and the projector check pass; the JSON says what else was measured.
#
# WHEELS, for a machine without network (here, where pip works; Python 3.12 x86-64 target):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl diffusers==0.42.1 pydicom==3.0.2 nibabel==5.4.2 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0 \
#     importlib_metadata zipp
#   and carry .whl/ with the repository (about 10 MiB).
set -u -o pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK="${QUICK:-0}"
# shellcheck source=benchmarks/device_env.sh
source "$REPO/benchmarks/device_env.sh"
device_prelude device_check || exit 2
BUDGET_S="${BUDGET_S:-470}"  # the whole check's seconds: 8 minutes less a margin (less when it follows training)
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

# ---------------------------------------------------------------- 1.-2. Python, requirements, the package
if ! device_python; then
  echo '{"check": "issue 14 device check", "error": "no torch with CUDA"}' >"$OUT/device_check.json"
  exit 2
fi

# ---------------------------------------------------------------- 3. the gpu-marked tests
tests_rc=0
if [ $want_cuda = 1 ]; then
  say "pytest -m gpu"
  timeout $(( BUDGET_S / 3 )) "$VPY" -m pytest -q -m gpu tests -p no:cacheprovider >"$OUT/pytest_gpu.txt" 2>&1; tests_rc=$?
  tail -n 3 "$OUT/pytest_gpu.txt" | tee -a "$LOG" >&2
else
  echo "skipped: DEVICE=cpu" >"$OUT/pytest_gpu.txt"
fi

# ---------------------------------------------------------------- 4. projector check and timings
budget=$(( $(left) - 40 ))
[ $budget -lt 30 ] && budget=30
extra=(); [ "$QUICK" = "1" ] && extra=(--quick)
say "benchmarks/device_check.py --device $DEVICE (stage budget ${budget}s)"
timeout $(( budget + 60 )) "$VPY" benchmarks/device_check.py --device "$DEVICE" --out "$OUT/device_check.json" \
  --budget-s "$budget" "${extra[@]}" 2>>"$LOG"
check_rc=$?
"$VPY" - "$OUT/device_check.json" "$tests_rc" <<'EOF' >>"$LOG" 2>&1
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    d = json.load(open(path))
except (OSError, ValueError):
    d = {"error": "device_check.py wrote no JSON"}
tail = open(path.replace("device_check.json", "pytest_gpu.txt")).read().strip().splitlines()[-1:]
d["gpu_tests"] = {"exit_status": rc, "summary": tail[0] if tail else ""}
json.dump(d, open(path, "w"), indent=1)
EOF
say "done: tests exit $tests_rc, check exit $check_rc; figures in $OUT/device_check.json"
[ $tests_rc -eq 0 ] && [ $check_rc -eq 0 ]
