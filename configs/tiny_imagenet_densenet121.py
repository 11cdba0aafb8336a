r"""Tiny-ImageNet, DenseNet-121 (CIFAR stem): 32 px, batch 128, 300 epochs.

  python -m aikd_jax.main --config=configs/tiny_imagenet_densenet121.py \
      --workdir=/tmp/aikd/tiny_imagenet_densenet121

Paper: Table 4, column "Tiny ImageNet", DenseNet-121. Top-1 error (mean +- std, 3 runs):
AI-KD 38.33 +- 0.07 % (the student, phase 2); Baseline 40.38 +- 0.14 %
(cross-entropy: our superior, phase 1).
Data: put tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) in
~/tensorflow_datasets/downloads/manual/ (or set --config.data.manual_dir); the first run
prepares it, or run `python -m aikd_jax.data.builders tiny_imagenet` beforehand.
"""
from configs import common


def get_config():
  return common.make('tiny_imagenet', 'cifar_densenet121')
