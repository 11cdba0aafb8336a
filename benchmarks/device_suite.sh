#!/usr/bin/env bash
# The prepared benchmark for a machine with an accelerator (under 8 minutes on one GPU or
# TPU host): train steps of baseline and aikd for every paper architecture in float32 and
# bfloat16, the same two steps with 1, 2 and 3 packed seeds (PreAct ResNet-18, width 64
# and 16), the host input pipeline, MFU, and the projected wall clock of the paper's runs.
# On a machine without an accelerator it runs a reduced suite (a tiny model, float32).
#
#   OUT=bench_out benchmarks/device_suite.sh [--mode=full|reduced] [--budget_s=200]
#                                            [--pack_budget_s=120]
#
# Writes $OUT/results.json and $OUT/results.md (default ./bench_out). PYTHON overrides the
# interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./bench_out}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"
exec "$PYTHON" benchmarks/device_suite.py --out="$OUT" "$@"
