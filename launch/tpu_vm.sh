#!/usr/bin/env bash
# Runs one aikd_jax experiment on every worker of a Cloud TPU VM (pod slice).
#
#   REPO=https://github.com/YOU/aikd_jax.git \
#     launch/tpu_vm.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#
# REPO (required) is the git URL each worker clones; BRANCH (default main) is checked out.
# The workdir must be on storage every worker reaches (gs://...): checkpoints are
# written collectively and resumed from there, so the same command after a preemption
# continues the run. Data: set --config.data.tfds_dir=gs://BUCKET/tfds to a TFDS data dir
# prepared beforehand (see docs/models_and_data.md, "Datasets"). --dry-run prints the gcloud command and
# runs nothing. Spot / queued resources: see launch/README.md.
set -euo pipefail
# Shell-quotes one word: bare when it is plain, else in single quotes.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
DRY_RUN=0
if [ "${1:-}" = --dry-run ]; then DRY_RUN=1; shift; fi
if [ $# -lt 4 ]; then
  echo "usage: REPO=GIT_URL $0 [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
if [ -z "${REPO:-}" ]; then
  echo "$0: set REPO to the git URL of your aikd_jax repository (REPO=https://github.com/YOU/aikd_jax.git)" >&2
  exit 2
fi
TPU=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4; shift 4
BRANCH=${BRANCH:-main}

TRAIN=".venv/bin/python -m aikd_jax.main --jax_distributed --config=$(quote "$CONFIG") --workdir=$(quote "$WORKDIR")"
for arg in "$@"; do TRAIN+=" $(quote "$arg")"; done
REMOTE="set -e && { [ -d aikd_jax ] || git clone $(quote "$REPO") aikd_jax; } && cd aikd_jax"
REMOTE+=" && git fetch -q origin && git checkout -q $(quote "$BRANCH") && git pull -q --ff-only"
REMOTE+=" && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'"
REMOTE+=" && $TRAIN"
CMD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$REMOTE")
if [ "$DRY_RUN" = 1 ]; then
  words=(); for w in "${CMD[@]}"; do words+=("$(quote "$w")"); done
  echo "${words[*]}"
else
  exec "${CMD[@]}"
fi
