#!/usr/bin/env bash
# Train the prior's UNet on a fresh GPU machine handed only this repository and the compact slice
# cache (issue 12: "where a GPU is available, train there first"); MINUTES of training, about
# 2 minutes of set-up on top.
#
#   ctresample train cache --compact --max-per-subject 64          # here, once: runs/cache/*.npz.xz (~27 MiB)
#   OUT=/some/folder MINUTES=6 bash benchmarks/device_train.sh     # there: $OUT/prior.tar, summary, curve, log
#   DEVICE=cpu MINUTES=0.2 OUT=/tmp/dt bash benchmarks/device_train.sh   # a dry run on a CPU
#
# Carry runs/cache/train_256_<key>[.maxN].npz.xz (the compact cache, 27 MiB; the float16 .npz is
# too big to travel) and a wheel folder named by WHEELS (default .whl/) holding what the GPU image
# lacks for training: diffusers, importlib_metadata and zipp (6.1 MiB; the download command is in
# benchmarks/device_check.sh). With the repository (20.4 MiB) that is 53.5 MiB of the 64 allowed, so
# carry neither the validation cache nor device_check's DICOM wheels (pydicom, nibabel, openjpeg).
# CONFIG (default configs/train_diffusion_gpu.yaml: a continuation of the shipped UNet at batch
# 64, bf16) and SET (extra "--set key=value" arguments) change what is trained; TARGET=autoencoder
# (with an autoencoder CONFIG, and the validation split's compact cache carried too) trains the
# autoencoder instead, and its vae/ comes back in vae.tar. The run folder is
# $RUN (default /tmp/ctr-train); a second call with the same RUN resumes from its checkpoint.
#
# What comes back in $OUT (at most 8 files): prior.tar (the exported prior, save_pretrained
# layout: unpack it and give its folder as `prior:` in a ReSample config, or compare it with
# benchmarks/prior_compare.py), summary.json, loss.png, train.log and device_train.log.
# Exit status: that of the training.
set -u -o pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MINUTES="${MINUTES:-6}"
TARGET="${TARGET:-diffusion}"
CONFIG="${CONFIG:-configs/train_diffusion_gpu.yaml}"
RUN="${RUN:-/tmp/ctr-train}"
SET="${SET:-}"
# shellcheck source=benchmarks/device_env.sh
source "$REPO/benchmarks/device_env.sh"
device_prelude device_train || exit 2
device_python || exit 2

say "caches here: $(ls runs/cache 2>/dev/null | tr '\n' ' ')"

extra=(--no-progress --output-dir "$RUN" --max-minutes "$MINUTES")
[ -f "$RUN/checkpoint.pt" ] && extra+=(--resume)
# shellcheck disable=SC2206
[ -n "$SET" ] && extra+=($SET)
[ "$DEVICE" = "cpu" ] && export CUDA_VISIBLE_DEVICES=""
say "ctresample train $TARGET --config $CONFIG ${extra[*]}"
"$VPY" -m ctresample train "$TARGET" --config "$CONFIG" "${extra[@]}" >"$OUT/train.log" 2>&1
rc=$?
tail -n 3 "$OUT/train.log" | tee -a "$LOG" >&2
exported=""
for d in prior vae; do
  [ -d "$RUN/$d" ] || continue
  tar -C "$RUN" -cf "$OUT/$d.tar" "$d" && say "$d.tar: $(du -h "$OUT/$d.tar" | cut -f1)" && exported=1
done
[ -n "$exported" ] || say "nothing exported in $RUN"
for f in summary.json loss.png; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
say "done: training exit $rc"
exit $rc
