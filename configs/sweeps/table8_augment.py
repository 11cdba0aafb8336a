r"""The paper's Table 8: AI-KD with Cutout, Mixup and CutMix, CIFAR-100, PreAct ResNet-18.

  python -m aikd_jax.sweep --sweep=configs/sweeps/table8_augment.py --workdir=DIR
  python -m aikd_jax.report DIR

The augmentation papers' CIFAR settings (the AI-KD paper gives none; docs/methods.md):
Cutout 8 px, Mixup α 1.0, CutMix α 1.0 with probability 0.5. The variant `none` is AI-KD without batch augmentation (Table 2's number,
the reference of Table 8). With superior_augment='none' (the default) the superior is the
plain baseline, so all four variants share the superior of their seed;
--config.superior_augment=same trains one superior per variant with its augmentation.
"""
from configs import common

SWEEP = {
    'methods': ('aikd',),
    'seeds': (0, 1, 2),
    'variants': {
        'none': {},
        'cutout': {'augment.cutout': 8},
        'mixup': {'augment.mixup': 1.0},
        'cutmix': {'augment.cutmix': 1.0, 'augment.cutmix_prob': 0.5},
    },
}


def get_config():
  return common.make('cifar100', 'preact_resnet18')
