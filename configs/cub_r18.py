r"""CUB-200-2011, ResNet-18: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/cub_r18.py \
      --workdir=/tmp/aikd/cub_r18

Paper: Table 2, column "CUB 200-2011", row "ResNet 18". Top-1 error (mean +- std, 3 runs):
AI-KD 29.59 +- 0.27 % (the student, phase 2); Baseline 36.65 +- 0.87 %
(cross-entropy: our superior, phase 1).
Data: TFDS `caltech_birds2011` (`python -m aikd_jax.data.builders caltech_birds2011` once, with network).
"""
from configs import common


def get_config():
  return common.make('cub200', 'resnet18')
