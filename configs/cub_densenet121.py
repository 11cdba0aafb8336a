r"""CUB-200-2011, DenseNet-121: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/cub_densenet121.py \
      --workdir=/tmp/aikd/cub_densenet121

Paper: Table 4, column "CUB 200-2011", DenseNet-121. Top-1 error (mean +- std, 3 runs):
AI-KD 26.65 +- 0.29 % (the student, phase 2); Baseline 34.69 +- 0.09 %
(cross-entropy: our superior, phase 1).
Data: TFDS `caltech_birds2011` (`python -m aikd_jax.data.builders caltech_birds2011` once, with network).
"""
from configs import common


def get_config():
  return common.make('cub200', 'densenet121')
