r"""Stanford Dogs, DenseNet-121: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/dogs_densenet121.py \
      --workdir=/tmp/aikd/dogs_densenet121

Paper: Table 4, column "Stanford Dogs", DenseNet-121. Top-1 error (mean +- std, 3 runs):
AI-KD 27.13 +- 0.16 % (the student, phase 2); Baseline 33.19 +- 0.80 %
(cross-entropy: our superior, phase 1).
Data: TFDS `stanford_dogs` (`python -m aikd_jax.data.builders stanford_dogs` once, with network).
"""
from configs import common


def get_config():
  return common.make('stanford_dogs', 'densenet121')
