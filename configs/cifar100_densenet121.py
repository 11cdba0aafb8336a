r"""CIFAR-100, DenseNet-121 (CIFAR stem): 32 px, batch 128, 300 epochs.

  python -m aikd_jax.main --config=configs/cifar100_densenet121.py \
      --workdir=/tmp/aikd/cifar100_densenet121

Paper: Table 4, column "CIFAR-100", DenseNet-121. Top-1 error (mean +- std, 3 runs):
AI-KD 18.35 +- 0.18 % (the student, phase 2); Baseline 19.71 +- 0.37 %
(cross-entropy: our superior, phase 1).
Data: TFDS `cifar100` (`python -m aikd_jax.data.builders cifar100` once, with network).
"""
from configs import common


def get_config():
  return common.make('cifar100', 'cifar_densenet121')
