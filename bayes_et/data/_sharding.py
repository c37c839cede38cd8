"""Run a per-eta batch function over all devices (and hosts) along the eta axis.

The eta batch is laid out as a global array with `NamedSharding(Mesh(devices, ("eta",)),
PartitionSpec("eta"))`. Each device then runs the *same single-device program* on its own
shard (dispatch is asynchronous, so devices work concurrently). We do not compile one SPMD
program for the mesh: its numerics may differ in the last bit, and a sampler turns one ulp
into a different chain. This way results do not depend on the number of devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def eta_mesh(devices=None) -> Mesh:
    """A one-axis mesh named "eta" over `devices` (default: all devices of all hosts)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("eta",))


def padded_size(n: int, num_devices: int, block: int = 1) -> int:
    """Bucket n up to a power of two (fewer recompilations), then to a multiple of
    num_devices * block."""
    size = 1 << max(n - 1, 0).bit_length()
    return -(-size // (num_devices * block)) * num_devices * block


@functools.cache
def _compiled(fn: Callable) -> Callable:
    return jax.jit(fn)


def map_over_eta(
    fn: Callable, mesh: Mesh, *batched, replicated=(), block: int = 1
):
    """fn(*batched_shard, *replicated) on each device's slice of the leading axis.

    `batched` are arrays or pytrees of arrays with the batch axis first. Inputs are padded
    by repeating the last row (each device gets a multiple of `block` rows); outputs (a
    pytree of arrays with the batch axis first) are trimmed back and returned as NumPy
    arrays in the same pytree, gathered from every host when several take part
    (`jax.distributed`).
    """
    leaves, treedef = jax.tree_util.tree_flatten(batched)
    n = leaves[0].shape[0]
    size = padded_size(n, mesh.size, block)
    sharding = NamedSharding(mesh, PartitionSpec("eta"))
    padded = [np.concatenate([b, np.repeat(b[-1:], size - n, axis=0)]) for b in
              map(np.asarray, leaves)]
    inputs = [
        jax.make_array_from_callback(p.shape, sharding, lambda index, p=p: p[index])
        for p in padded
    ]
    program = _compiled(fn)
    shard_outputs = []
    for shards in zip(*(x.addressable_shards for x in inputs), strict=True):
        device = shards[0].device
        local = jax.device_put(replicated, device)
        args = jax.tree_util.tree_unflatten(treedef, [s.data for s in shards])
        out_leaves, out_tree = jax.tree_util.tree_flatten(program(*args, *local))
        shard_outputs.append(out_leaves)
    outputs = []
    for pieces in zip(*shard_outputs, strict=True):
        shape = (size, *pieces[0].shape[1:])
        array = jax.make_array_from_single_device_arrays(shape, sharding, list(pieces))
        if jax.process_count() > 1:
            array = multihost_utils.process_allgather(array, tiled=True)
        outputs.append(np.asarray(array)[:n])
    return jax.tree_util.tree_unflatten(out_tree, outputs)
