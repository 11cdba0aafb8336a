"""The seed axis of a packed run: several seeds of one cell trained as one program.

A phase trains one seed (`Solo`) or a pack of seeds (`Packed`). In a pack every leaf of
the state, every batch, every superior and every step's metrics has a leading axis with
one entry per seed, and the pure step, init and end-of-epoch update are `jax.vmap`ped
over it: each seed keeps its own initialisation, data order, augmentation, method state
and BatchNorm statistics, while the device runs one program with the same number of
kernel launches as one seed. The step and the methods never know (docs/reproducing.md,
*Packing seeds*; when it pays: docs/benchmarks.md, *Packed seeds*).

Sharding: the batch axis stays sharded over the mesh's 'data' axis exactly as in a solo
run, and the seed axis is replicated. Each seed then sees its global batch split over
every device as its unpacked run does (BatchNorm over the same global batch, the same
reduction layout), and a pack works for any seed count and device count; sharding the
seed axis instead would need the device count to divide by it and would change each
seed's data-parallel layout.
"""
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np


class Solo:
  """One seed: no seed axis anywhere (a plain run, bit-for-bit as before packing)."""

  def __init__(self, seed: int):
    self.seeds = (int(seed),)

  @property
  def count(self) -> int:
    return 1

  def init(self, init_fn: Callable, pretrained):
    """`init_fn(key, pretrained)`, the key from the seed (traced: call it under jit)."""
    return init_fn(jax.random.key(self.seeds[0]), pretrained)

  def step(self, make_step: Callable[[int], Callable]) -> Callable:
    """`make_step(seed)` -> step(state, batch, superior); here the seed is a constant."""
    return make_step(self.seeds[0])

  def map(self, fn: Callable) -> Callable:
    """`fn` of one seed's pytree, applied to the run's pytree."""
    return fn

  def map_variables(self, fn: Callable) -> Callable:
    """`fn(variables, images)` of one seed, applied to the run's variables and one batch."""
    return fn

  def stack(self, trees: Sequence):
    (tree,) = trees
    return tree

  def unstack(self, tree) -> list:
    return [tree]

  @property
  def batch_spec(self) -> P:
    return P('data')


class Packed(Solo):
  """Several seeds: a leading seed axis on the state, batches, superiors and metrics."""

  def __init__(self, seeds: Sequence[int]):  # pylint: disable=super-init-not-called
    self.seeds = tuple(int(s) for s in seeds)
    if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'a pack needs 2 or more distinct seeds, got {self.seeds}')

  @property
  def count(self) -> int:
    return len(self.seeds)

  def init(self, init_fn, pretrained):
    keys = jnp.stack([jax.random.key(s) for s in self.seeds])
    return jax.vmap(lambda key: init_fn(key, pretrained))(keys)

  def step(self, make_step):
    seeds = np.asarray(self.seeds, np.int32)

    def packed_step(state, batch, superior):
      one = lambda s, b, sup, seed: make_step(seed)(s, b, sup)
      return jax.vmap(one)(state, batch, superior, jnp.asarray(seeds))
    return packed_step

  def map(self, fn):
    return jax.vmap(fn)

  def map_variables(self, fn):
    return jax.vmap(fn, in_axes=(0, None))

  def stack(self, trees):
    if len(trees) != self.count:
      raise ValueError(f'{len(trees)} trees for a pack of {self.count} seeds')
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)

  def unstack(self, tree):
    return [jax.tree.map(lambda x, k=k: x[k], tree) for k in range(self.count)]

  @property
  def batch_spec(self) -> P:
    return P(None, 'data')


def of(seeds: Sequence[int]) -> Solo:
  """`Solo` for one seed, `Packed` for several."""
  return Solo(seeds[0]) if len(seeds) == 1 else Packed(seeds)


def seeds_that_fit(needed_bytes: int, limit_bytes: int | None, count: int) -> int | None:
  """How many seeds of a pack that needs `needed_bytes` per device fit in `limit_bytes`.

  None when the device does not say its limit (a CPU); otherwise `count` if the pack
  fits, else the largest number of seeds that does (memory grows about linearly with
  the seed count: every seed brings its own state, activations and gradients).
  """
  if not limit_bytes:
    return None
  if needed_bytes <= limit_bytes:
    return count
  return int(limit_bytes // max(needed_bytes / count, 1))
