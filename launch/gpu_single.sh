#!/usr/bin/env bash
# One machine with one or more NVIDIA GPUs: data parallel over all of them.
#
#   launch/gpu_single.sh configs/cifar100_preact_r18.py /data/runs/c100_r18 [--config.key=value ...]
set -euo pipefail
CONFIG=$1 WORKDIR=$2; shift 2
# TensorFlow (tf.data) is kept off the GPUs by the pipeline; JAX takes them all.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m aikd_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
