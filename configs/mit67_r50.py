r"""MIT67, ResNet-50: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/mit67_r50.py \
      --workdir=/tmp/aikd/mit67_r50

Paper: Table 2, column "MIT67", row "ResNet 50". Top-1 error (mean +- std, 3 runs):
AI-KD 36.42 +- 0.87 % (the student, phase 2); Baseline 38.83 +- 0.15 %
(cross-entropy: our superior, phase 1).
Data: put indoorCVPR_09.tar, TrainImages.txt and TestImages.txt (URLs in
aikd_jax/data/builders/mit67.py) in ~/tensorflow_datasets/downloads/manual/ (or set
--config.data.manual_dir); the first run prepares them, or run
`python -m aikd_jax.data.builders mit67` beforehand.
"""
from configs import common


def get_config():
  return common.make('mit67', 'resnet50')
