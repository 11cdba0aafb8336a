r"""CIFAR-100, PreAct ResNet-18: 32 px, batch 128, 300 epochs.

  python -m aikd_jax.main --config=configs/cifar100_preact_r18.py \
      --workdir=/tmp/aikd/cifar100_preact_r18

Paper: Table 2, column "CIFAR-100", row "ResNet 18". Top-1 error (mean +- std, 3 runs):
AI-KD 19.87 +- 0.10 % (the student, phase 2); Baseline 23.97 +- 0.29 %
(cross-entropy: our superior, phase 1).
Data: TFDS `cifar100` (`python -m aikd_jax.data.builders cifar100` once, with network).
"""
from configs import common


def get_config():
  return common.make('cifar100', 'preact_resnet18')
