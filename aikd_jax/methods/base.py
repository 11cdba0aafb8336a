"""The method interface: what a training objective tells the generic step, state and loop.

A method is one module in `aikd_jax/methods/` that subclasses `Method` and calls
`registry.register(...)`. The generic layers ask it:
- `batch`: 'plain' or 'paired' (CS-KD's class pairs: 'pair_image', 'pair_label');
- `needs_superior`: whether the step runs the frozen superior (then phase 1 trains one);
- `features`: whether the student's forward returns stage outputs and the pre-pool map;
- `check_stages`: whether the model's stage shapes can feed the objective (before a run);
- `init_state`: its own state (a pytree, checkpointed with the student; None: none);
- `loss` / `objective`: the student's loss (traced under `jax.grad`);
- `after_step`: state updates after the SGD step (tables, a critic);
- `end_epoch`: state updates at each epoch end (a weight snapshot).
Everything is pure: the step jits it, the loop never names a method. See
docs/architecture.md ("Adding a method") and docs/methods.md.
"""
import dataclasses
from typing import Any, Callable, NamedTuple

import jax


class StudentOutput(NamedTuple):
  logits: jax.Array  # [B, C], float32
  features: dict | None  # {'stages': [...], 'prepool': map} when the method asks for them


# forward(params, batch_stats, images) -> (StudentOutput, new batch_stats); train mode.
Forward = Callable[[Any, Any, jax.Array], tuple[StudentOutput, Any]]


@dataclasses.dataclass(frozen=True)
class StepInputs:
  """What the generic step hands a method in one step (all traced arrays)."""
  batch: dict  # after Cutout/Mixup/CutMix: 'image', 'label', 'id' (+ 'mix_perm', 'mix_lam')
  targets: jax.Array  # [B, C] label distribution (one-hot, or the Mixup/CutMix mixture)
  key: jax.Array  # this step's key, for the method's own randomness
  step: jax.Array  # the student's step before this update
  epoch: jax.Array  # step // steps_per_epoch (0-indexed)
  superior_logits: jax.Array | None  # eval-mode logits of the frozen superior, if needed
  model: Any = None  # the student's flax module (for eval-mode forwards of a snapshot)


@dataclasses.dataclass(frozen=True)
class InitContext:
  """What a method may use to build its initial state."""
  model: Any  # the student's flax module
  variables: dict  # the student's initial {'params', 'batch_stats'}
  num_classes: int
  num_train_examples: int  # the size of per-example tables ('id' is in [0, N))
  steps_per_epoch: int


class Method:
  """Plain cross-entropy; subclasses override what their objective changes."""
  batch = 'plain'
  needs_superior = False
  features = False

  def __init__(self, name: str, c: Any = None):
    self.name = name
    self.c = c  # the method's own config group (`config.<group>`), if it has one

  @classmethod
  def from_config(cls, name: str, c: Any, config) -> 'Method':
    """Builds the method registered as `name` from its group `c` and the whole RunConfig."""
    del config
    return cls(name, c)

  def check_stages(self, shapes: list[tuple[int, ...]], model: str) -> None:
    """Raises ConfigError if stage outputs of these NHWC shapes (of the model that `model`
    names, for the message) cannot feed the objective."""
    del shapes, model

  def init_state(self, key: jax.Array, ctx: InitContext) -> Any:
    del key, ctx
    return None

  def loss(self, forward: Forward, params, batch_stats, state, inputs: StepInputs):
    """Returns (loss, terms, logits, new batch_stats): one forward, then `objective`."""
    out, new_stats = forward(params, batch_stats, inputs.batch['image'])
    loss, terms = self.objective(out, state, inputs)
    return loss, terms, out.logits, new_stats

  def objective(self, out: StudentOutput, state, inputs: StepInputs):
    """Returns (loss, {term: value}) for one student forward `out`."""
    raise NotImplementedError

  def after_step(self, state, logits: jax.Array, inputs: StepInputs):
    """Returns (state, metrics) after the SGD step; `logits` are the pre-update ones."""
    del logits, inputs
    return state, {}

  def end_epoch(self, state, variables: dict):
    """Returns the state at an epoch end; `variables` are the student's."""
    del variables
    return state

