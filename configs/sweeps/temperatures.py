r"""The temperature search of AI-KD: τ_P × τ_G ∈ {1, 2, 4}², CIFAR-100, PreAct ResNet-18.

  python -m aikd_jax.sweep --sweep=configs/sweeps/temperatures.py --workdir=DIR
  python -m aikd_jax.report DIR

The paper searches the temperatures of the progressive and guide KL (section 5.4) but
prints no values; ours default to 1 (docs/development.md, Design decisions). Nine variants share the
superior of their seed.
"""
from configs import common

TAUS = (1.0, 2.0, 4.0)

SWEEP = {
    'methods': ('aikd',),
    'seeds': (0, 1, 2),
    'variants': {f'taup{p:g}_taug{g:g}': {'aikd.tau_p': p, 'aikd.tau_g': g}
                 for p in TAUS for g in TAUS},
}


def get_config():
  return common.make('cifar100', 'preact_resnet18')
