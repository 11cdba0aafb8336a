#!/usr/bin/env bash
# One machine with one or more NVIDIA GPUs: data parallel over all of them.
#
#   launch/gpu_single.sh [--dry-run] CONFIG WORKDIR [--config.key=value ...]
#   launch/gpu_single.sh configs/cifar100_preact_r18.py /data/runs/c100_r18
#
# --dry-run prints the command and runs nothing.
set -euo pipefail
# Shell-quotes one word: bare when it is plain, else in single quotes.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
DRY_RUN=0
if [ "${1:-}" = --dry-run ]; then DRY_RUN=1; shift; fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.key=value ...]" >&2; exit 2
fi
CONFIG=$1 WORKDIR=$2; shift 2
# TensorFlow (tf.data) is kept off the GPUs by the pipeline; JAX takes them all.
MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
CMD=(env "XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION" python -m aikd_jax.main
     "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
if [ "$DRY_RUN" = 1 ]; then
  words=(); for w in "${CMD[@]}"; do words+=("$(quote "$w")"); done
  echo "${words[*]}"
else
  exec "${CMD[@]}"
fi
