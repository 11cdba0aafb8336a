"""The same PreAct ResNet-18 train steps in PyTorch and in JAX, side by side.

  pip install torch        # an optional extra: aikd_jax never needs it
  python benchmarks/torch_peer.py [--batch=128] [--width=64] [--repeats=7]

Both frameworks time, on synthetic CIFAR-sized data (32 px, 100 classes, float32):
  baseline: student forward, cross-entropy, backward, SGD (Nesterov, weight decay) step;
  aikd:     student forward + the superior's forward (eval, no grad) + the previous-epoch
            snapshot's forward (eval, no grad), loss 0.6 CE + 0.3 KL + 0.1 KL - 0.1 mean D,
            SGD step, then one critic Adam step with the gradient penalty.
The JAX side is `benchmarks/step_time.py`'s `StepBench` (the trainer's own step). The
PyTorch side is written here: PS-KD's PreAct ResNet-18 as `aikd_jax.models` builds it,
and the critic of `aikd_jax/models/critic.py`. Without torch it prints one line and
exits with status 2.
"""
import os
import statistics
import sys
import time

from absl import app, flags

try:
  import torch
  from torch import nn
  import torch.nn.functional as F
except ImportError:
  torch = None

_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_WIDTH = flags.DEFINE_integer('width', 64, 'Stem width of the PreAct ResNet-18.')
_CLASSES = flags.DEFINE_integer('num_classes', 100, 'Number of classes.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first (JAX: after compiling).')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed steps; the median is reported.')
_DEVICE = flags.DEFINE_string('device', None, 'torch device; default cuda if available, else cpu.')
METHODS = ('baseline', 'aikd')
MISSING = ('torch_peer: PyTorch is not installed; it is an optional extra: '
           '`pip install torch`, then run this again')


if torch is not None:

  class PreActBlock(nn.Module):
    """PS-KD's pre-activation block; the identity shortcut carries relu(bn1(x))."""

    def __init__(self, cin: int, cout: int, stride: int):
      super().__init__()
      self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                       if stride != 1 or cin != cout else None)

    def forward(self, x):
      o = F.relu(self.bn1(x))
      shortcut = o if self.shortcut is None else self.shortcut(o)
      return self.conv2(F.relu(self.bn2(self.conv1(o)))) + shortcut

  class PreActResNet18(nn.Module):
    """conv3x3 -> BN -> ReLU, four stages of two blocks, global mean, Linear."""

    def __init__(self, num_classes: int, width: int = 64):
      super().__init__()
      self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      blocks, cin = [], width
      for i in range(4):
        for j in range(2):
          blocks.append(PreActBlock(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
          cin = width * 2**i
      self.blocks = nn.Sequential(*blocks)
      self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
      x = self.blocks(F.relu(self.bn1(self.conv1(x))))
      return self.linear(x.mean(dim=(2, 3)))

  def make_critic(num_classes: int) -> nn.Module:
    """aikd_jax's critic: FC(64) -> BN -> LeakyReLU -> FC(32) -> LeakyReLU -> FC(1)."""
    return nn.Sequential(nn.Linear(num_classes, 64), nn.BatchNorm1d(64), nn.LeakyReLU(0.2),
                         nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1),
                         nn.Flatten(0))

  def gradient_penalty(critic, real, fake):
    eps = torch.rand(real.shape[0], 1, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grads, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grads.norm(2, dim=1) - 1) ** 2).mean()

  class TorchSteps:
    """The student, a frozen superior and previous-epoch snapshot, the critic, optimizers."""

    def __init__(self, num_classes: int, width: int, device):
      make = lambda: PreActResNet18(num_classes, width).to(device)
      self.student, self.superior, self.previous = make(), make().eval(), make().eval()
      self.critic = make_critic(num_classes).to(device)
      self.opt = torch.optim.SGD(self.student.parameters(), lr=0.1, momentum=0.9,
                                 nesterov=True, weight_decay=5e-4)
      self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=1e-4, betas=(0.9, 0.999))

    def baseline(self, x, y):
      loss = F.cross_entropy(self.student(x), y)
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      self.opt.step()

    def aikd(self, x, y):
      with torch.no_grad():
        z_sup = self.superior(x)
        p_prev = F.softmax(self.previous(x), dim=1)
      logits = self.student(x)
      log_p = F.log_softmax(logits, dim=1)
      loss = (0.6 * F.cross_entropy(logits, y)
              + 0.3 * F.kl_div(log_p, p_prev, reduction='batchmean')
              + 0.1 * F.kl_div(log_p, F.softmax(z_sup, dim=1), reduction='batchmean')
              - 0.1 * self.critic(logits).mean())
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      self.opt.step()
      fake = logits.detach()
      critic_loss = (self.critic(fake).mean() - self.critic(z_sup).mean()
                     + 10.0 * gradient_penalty(self.critic, z_sup, fake))
      self.critic_opt.zero_grad(set_to_none=True)
      critic_loss.backward()
      self.critic_opt.step()


def time_torch(method: str, batch: int, num_classes: int, width: int, device: str,
               warmup: int, repeats: int) -> float:
  """Median seconds of one PyTorch step of `method`."""
  torch.manual_seed(0)
  steps = TorchSteps(num_classes, width, device)
  x = torch.randn(batch, 3, 32, 32, device=device)
  y = torch.randint(0, num_classes, (batch,), device=device)
  step = getattr(steps, method)
  sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
  times = []
  for i in range(warmup + repeats):
    t0 = time.perf_counter()
    step(x, y)
    sync()
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_jax(method: str, batch: int, num_classes: int, width: int, warmup: int,
             repeats: int) -> float:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import step_time  # pylint: disable=g-import-not-at-top
  from aikd_jax import sharding  # pylint: disable=g-import-not-at-top
  spec = step_time.StepSpec('preact_resnet18', method, batch, 32, num_classes, width)
  return step_time.measure(spec, sharding.make_mesh(), warmup, repeats)['step_s']


def main(argv):
  del argv
  if torch is None:
    print(MISSING, file=sys.stderr)
    sys.exit(2)
  import jax  # pylint: disable=g-import-not-at-top
  device = _DEVICE.value or ('cuda' if torch.cuda.is_available() else 'cpu')
  b, c, w = _BATCH.value, _CLASSES.value, _WIDTH.value
  print(f'PreAct ResNet-18 (width {w}), 32 px, batch {b}, {c} classes, float32')
  print(f'torch {torch.__version__} on {device} ({torch.get_num_threads()} threads); '
        f'jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}')
  print(f'{"step":10s}{"torch ms":>10s}{"jax ms":>10s}{"jax/torch":>11s}')
  rows = {}
  for m in METHODS:
    t = time_torch(m, b, c, w, device, _WARMUP.value, _REPEATS.value)
    j = time_jax(m, b, c, w, _WARMUP.value, _REPEATS.value)
    rows[m] = (t, j)
    print(f'{m:10s}{1e3 * t:10.1f}{1e3 * j:10.1f}{j / t:11.2f}', flush=True)
  (tb, jb), (ta, ja) = rows['baseline'], rows['aikd']
  print(f'aikd / baseline: torch {ta / tb:.2f}, jax {ja / jb:.2f}')


if __name__ == '__main__':
  app.run(main)
