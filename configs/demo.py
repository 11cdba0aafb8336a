"""The embedded demo: Fashion-MNIST from Debian's `dataset-fashion-mnist`, both phases on a CPU.

  python -m aikd_jax.main --config=configs/demo.py --workdir=/tmp/aikd_demo
  python -m aikd_jax.main --config=configs/demo.py:smoke --workdir=/tmp/aikd_smoke

`demo` trains a width-16 PreAct ResNet-18 on 10k images for a few epochs per phase;
`smoke` runs a few steps per phase in seconds (tests, first check on a new machine).
"""
from configs import default


def get_config(arg: str = 'demo'):
  c = default.get_config()
  c.data.name = 'fashion_mnist'
  c.model.width = 16
  if arg == 'demo':
    c.num_epochs = 4
    c.batch_size = 128
    c.data.train_subset = 10_000
    c.optim.lr_milestones = (3,)
  elif arg == 'smoke':
    c.num_epochs = 2
    c.batch_size = 32
    c.eval_batch_size = 64
    c.model.width = 4
    c.data.train_subset = 128
    c.data.eval_subset = 100
    c.optim.lr_milestones = (1,)
    c.log_every_steps = 2
    c.fast_compile = True
  else:
    raise ValueError(f"configs/demo.py takes 'demo' or 'smoke', got {arg!r}")
  return c
