r"""CUB-200-2011, ResNet-50: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/cub_r50.py \
      --workdir=/tmp/aikd/cub_r50

Paper: Table 2, column "CUB 200-2011", row "ResNet 50". Top-1 error (mean +- std, 3 runs):
AI-KD 32.68 +- 0.33 % (the student, phase 2); Baseline 37.53 +- 1.28 %
(cross-entropy: our superior, phase 1).
Data: TFDS `caltech_birds2011` (`python -m aikd_jax.data.builders caltech_birds2011` once, with network).
"""
from configs import common


def get_config():
  return common.make('cub200', 'resnet50')
