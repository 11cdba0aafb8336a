r"""Tiny-ImageNet, PreAct ResNet-18: 32 px, batch 128, 300 epochs.

  python -m aikd_jax.main --config=configs/tiny_imagenet_preact_r18.py \
      --workdir=/tmp/aikd/tiny_imagenet_preact_r18

Paper: Table 2, column "Tiny ImageNet", row "ResNet 18". Top-1 error (mean +- std, 3 runs):
AI-KD 41.84 +- 0.10 % (the student, phase 2); Baseline 46.28 +- 0.19 %
(cross-entropy: our superior, phase 1).
Data: put tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) in
~/tensorflow_datasets/downloads/manual/ (or set --config.data.manual_dir); the first run
prepares it, or run `python -m aikd_jax.data.builders tiny_imagenet` beforehand.
"""
from configs import common


def get_config():
  return common.make('tiny_imagenet', 'preact_resnet18')
