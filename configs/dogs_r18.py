r"""Stanford Dogs, ResNet-18: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/dogs_r18.py \
      --workdir=/tmp/aikd/dogs_r18

Paper: Table 2, column "Stanford Dogs", row "ResNet 18". Top-1 error (mean +- std, 3 runs):
AI-KD 28.61 +- 0.21 % (the student, phase 2); Baseline 32.61 +- 0.55 %
(cross-entropy: our superior, phase 1).
Data: TFDS `stanford_dogs` (`python -m aikd_jax.data.builders stanford_dogs` once, with network).
"""
from configs import common


def get_config():
  return common.make('stanford_dogs', 'resnet18')
