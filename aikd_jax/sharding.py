"""The data-parallel mesh and host-local <-> global array conversion (docs/architecture.md).

One 1-D mesh `('data',)` over every device of every process: the state is replicated,
batches are sharded along their first axis, so BatchNorm sees the global batch.
"""
import collections
from collections.abc import Iterable, Iterator

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def to_global(batch: dict, mesh, spec: P = P('data')) -> dict:
  """Assembles each process's host-local rows into one global array sharded on 'data'
  (`spec`: P(None, 'data') for a pack's batches, whose rows are their second axis)."""
  sharding = NamedSharding(mesh, spec)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def prefetch_to_device(batches: Iterable[dict], mesh, spec: P = P('data'),
                       size: int = 2) -> Iterator[dict]:
  """Global arrays of the next `size` batches are on their way while a step runs.

  The transfers are issued ahead (device_put is asynchronous), so the host's copy of
  batch n+1 overlaps the step on batch n.
  """
  queue = collections.deque()
  for batch in batches:
    queue.append(to_global(batch, mesh, spec))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def to_host(x: jax.Array) -> np.ndarray:
  """The full value of a (possibly multi-process) global array, on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
