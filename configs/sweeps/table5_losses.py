r"""The paper's Table 5, the loss ablation: CIFAR-100, PreAct ResNet-18, three seeds.

  python -m aikd_jax.sweep --sweep=configs/sweeps/table5_losses.py --workdir=DIR
  python -m aikd_jax.report DIR

Rows: AI-KD, No Adv, Only Progressive, Only Guide, Baseline (docs/usage.md, Methods). The students
of aikd, no_adv and only_guide share one superior per seed (DIR/superior/seed<k>).
"""
from configs import common

SWEEP = {
    'methods': ('baseline', 'only_progressive', 'only_guide', 'no_adv', 'aikd'),
    'seeds': (0, 1, 2),
}


def get_config():
  return common.make('cifar100', 'preact_resnet18')
