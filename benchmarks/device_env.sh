# Sourced by benchmarks/device_check.sh and benchmarks/device_train.sh, for a fresh GPU machine
# handed only this repository. Two functions:
#   device_prelude NAME  OUT (default <repo>/NAME-out, created), DEVICE (default cuda), LOG
#                        ($OUT/NAME.log, emptied), T0, a `say` that logs "[NAME <s>s] ...", cd to REPO
#   device_python        finds a Python whose torch sees CUDA (DEVICE=cpu: any torch), installs the
#                        missing requirements beside it (from wheels carried in $WHEELS, default
#                        .whl/, else PyPI) and this repository without network, exports PYTHONPATH;
#                        sets PY and VPY (empty, and returns 2, when no suitable torch exists)
# Both need REPO.
device_prelude() {
  DEVICE_TOOL="$1"
  OUT="${OUT:-$REPO/${DEVICE_TOOL//_/-}-out}"
  DEVICE="${DEVICE:-cuda}"
  mkdir -p "$OUT"
  LOG="$OUT/$DEVICE_TOOL.log"
  : >"$LOG"
  T0=$(date +%s)
  cd "$REPO" || return 2
}
say() { echo "[$DEVICE_TOOL $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }

device_python() {
  # ---------------------------------------------------------------- 1. a Python with torch (CUDA)
  want_cuda=1; [ "$DEVICE" = "cpu" ] && want_cuda=0
  PY=""
  for cand in ${PYTHON:-} python3 python; do
    command -v "$cand" >/dev/null 2>&1 || continue
    if [ $want_cuda = 1 ]; then
      timeout 60 "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >>"$LOG" 2>&1 && { PY="$cand"; break; }
    else
      timeout 60 "$cand" -c "import torch" >>"$LOG" 2>&1 && { PY="$cand"; break; }
    fi
  done
  if [ -z "$PY" ]; then
    say "no python with a CUDA torch: pip install torch into /tmp/ctr-torch (needs the network)"
    base=$(command -v python3 || command -v python)
    "$base" -m venv /tmp/ctr-torch >>"$LOG" 2>&1 && timeout 200 /tmp/ctr-torch/bin/pip install -q torch >>"$LOG" 2>&1 \
      && PY=/tmp/ctr-torch/bin/python
    if [ -z "$PY" ] || ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() or $want_cuda == 0 else 1)"; then
      say "FAILED: no torch with CUDA could be found or installed"
      PY=""
      return 2
    fi
  fi
  say "python: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'))"

  # ---------------------------------------------------------------- 2. the package, beside that Python's own
  # Not a venv: on the GPU image python3 is itself a venv, whose packages a child venv would not see.
  SITE="${SITE:-/tmp/ctr-site}"
  mkdir -p "$SITE"
  missing=$("$PY" - <<'EOF'
import importlib.util
need = {"diffusers": "diffusers", "pydicom": "pydicom", "nibabel": "nibabel", "yaml": "pyyaml", "tqdm": "tqdm",
        "pylibjpeg": "pylibjpeg", "openjpeg": "pylibjpeg-openjpeg", "safetensors": "safetensors",
        "skimage": "scikit-image", "pytest": "pytest"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
  )
  if [ -n "$missing" ]; then
    WHEELS="${WHEELS:-$REPO/.whl}"
    if [ -d "$WHEELS" ]; then
      say "missing: $missing; installing the wheels carried in $WHEELS"
      timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
        >>"$LOG" 2>&1 || say "some carried wheels did not install (see the log)"
    else
      say "missing: $missing; trying PyPI (fails without network: the stages that need them then fail, recorded)"
      timeout 150 "$PY" -m pip install -q --target "$SITE" $missing >>"$LOG" 2>&1 || say "pip install failed (offline?)"
    fi
  fi
  # the repository itself, built by setuptools without network (presets and the shipped prior as package data)
  if timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$SITE/pkg" "$REPO" \
       >>"$LOG" 2>&1; then
    export PYTHONPATH="$SITE/pkg:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    say "install failed: running from the source tree (PYTHONPATH)"
    export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONUNBUFFERED=1
  VPY="$PY"
}
