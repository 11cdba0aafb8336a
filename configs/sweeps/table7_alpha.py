r"""The paper's Table 7: the balancing weights (α_CE, α_G, α_P) of AI-KD, ω = 0.1.

  python -m aikd_jax.sweep --sweep=configs/sweeps/table7_alpha.py --workdir=DIR
  python -m aikd_jax.report DIR

CIFAR-100, PreAct ResNet-18; the six weight combinations of the paper, Table 7 (the
first is AI-KD's default). All variants share the superior of their seed.
"""
from configs import common

# (alpha_ce, alpha_g, alpha_p), in the paper's Table 7 order.
ALPHAS = ((0.6, 0.1, 0.3), (0.6, 0.2, 0.2), (0.6, 0.3, 0.1), (0.7, 0.1, 0.2),
          (0.7, 0.2, 0.1), (0.8, 0.1, 0.1))

SWEEP = {
    'methods': ('aikd',),
    'seeds': (0, 1, 2),
    'variants': {f'ce{ce:g}_g{g:g}_p{p:g}': {'aikd.alpha_ce': ce, 'aikd.alpha_g': g,
                                              'aikd.alpha_p': p}
                 for ce, g, p in ALPHAS},
}


def get_config():
  return common.make('cifar100', 'preact_resnet18')
