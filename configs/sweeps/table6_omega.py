r"""The paper's Table 6: the adversarial weight ω of AI-KD, CIFAR-100, PreAct ResNet-18.

  python -m aikd_jax.sweep --sweep=configs/sweeps/table6_omega.py --workdir=DIR
  python -m aikd_jax.report DIR

The ω values of the paper's Table 6 (its text lists a subset: 0, 0.01, 0.1, 0.5, 1).
ω = 0 is the No Adv row of Table 5; ω = 0.1 is AI-KD's default. Each variant's cells go
to DIR/<variant>/aikd/seed<k>; all variants share the superior of their seed.
"""
from configs import common

OMEGAS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)

SWEEP = {
    'methods': ('aikd',),
    'seeds': (0, 1, 2),
    'variants': {f'omega{w:g}': {'aikd.omega': w} for w in OMEGAS},
}


def get_config():
  return common.make('cifar100', 'preact_resnet18')
