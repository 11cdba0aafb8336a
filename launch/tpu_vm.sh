#!/usr/bin/env bash
# Runs one aikd_jax experiment on every worker of a Cloud TPU VM (pod slice).
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/cub_r50.py gs://BUCKET/aikd/cub_r50 [--config.key=value ...]
#
# The workdir must be on storage every worker reaches (GCS): checkpoints are written
# collectively and resumed from there. Data: set --config.data.tfds_dir=gs://BUCKET/tfds
# to a TFDS data dir prepared beforehand (see README, "Datasets").
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2; exit 2
fi
TPU=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4; shift 4
REPO=${REPO:-https://github.com/aikd-jax/aikd_jax.git}
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d aikd_jax ] || git clone $REPO aikd_jax
  cd aikd_jax && git pull --ff-only
  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'
  .venv/bin/python -m aikd_jax.main --jax_distributed --config=$CONFIG --workdir=$WORKDIR $*
"
