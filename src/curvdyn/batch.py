"""How a batch of runs executes as one compiled program: the strategies and the device split.

:func:`curvdyn.simulate` runs weights with a leading batch axis ``(B, n_i, n_{i−1})`` as one
program. Two ways to run the B members inside it:

* ``"vmap"`` — vectorized: every member takes its step at the same time. Right when the members
  take the same steps (Euler: one step per time unit of ``dt`` for everyone) or when a step is so
  cheap that the per-call overhead dominates (SGD). A vmapped adaptive solver runs in lock-step:
  every member keeps stepping (masked) until the slowest is done, so members that need different
  step counts all pay for the largest.
* ``"map"`` — one member after the other (``jax.lax.map``) inside the same program: each member
  takes its own number of adaptive steps; what is saved over separate calls is their per-call
  overhead (validation, dispatch, host transfers), not their arithmetic.

``"auto"`` (:func:`choose_strategy`) picks by rule family and integrator, from measurements
side by side (``benchmarks/batch.py``; table in ``benchmarks/README.md``): ``vmap`` for Euler
and for the plain gradient, ``map`` for an adaptive ODE with any curvature rule.

**Devices.** With more than one local device (several GPUs, or CPU devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the batch axis is split over a 1-D
:class:`jax.sharding.Mesh` of the devices (axis ``"batch"``) with :func:`jax.shard_map`: each
device runs its own members with the chosen strategy, so an adaptive member never waits for a
member on another device. A batch whose size is not a multiple of the device count is padded by
repeating its last member (computed, then dropped). Each member's numbers are those of the
single-device run (``tests/test_batch.py`` checks equality).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: The batch strategies of :func:`curvdyn.simulate` (``batch=``).
STRATEGIES = ("auto", "vmap", "map")
#: The name of the mesh axis the batch is split over.
BATCH_AXIS = "batch"


def choose_strategy(rule, integrator_kind: str, devices: Sequence | None = None) -> str:
    """The strategy ``"auto"`` stands for: ``"vmap"`` or ``"map"``.

    On the CPU, by measurement (``benchmarks/batch.py``, the paper's Fig. 3 network, table in
    ``benchmarks/README.md``): for the plain gradient (SGD) ``vmap``, with Euler and with the
    adaptive ODE (the steps are cheap and the per-call overhead dominates); for every curvature
    rule (NGD, sqrt-NGD, the block rules, ...) ``map``: under an adaptive ODE ``vmap`` pays the
    lock-step (every member steps until the slowest is done: 0.6–0.9× of separate runs), under
    Euler it gains 1.1–1.2× but its members drift from their separate runs by amplified round-off
    (4e-3 for sqrt-NGD-d after 300 steps from 0.05-scale weights), while ``map`` gives each
    member bitwise the numbers of its separate run and of any split over devices, within the
    noise of separate runs' speed (0.97–1.08×; and ``vmap`` of a curvature rule over several CPU
    devices deadlocks, :func:`check_split`).

    On an accelerator (GPU, TPU) ``vmap``: the members of a batch run in parallel there, so the
    lock-step costs the slowest member's step count rather than B runs. This choice is reasoned,
    not measured (no accelerator was available when it was made).

    Args:
      rule: a :class:`curvdyn.Rule`.
      integrator_kind: ``"ode"`` or ``"euler"`` (the choice does not depend on it today; it is
        part of the measured key).
      devices: the devices the batch runs on (default: the local devices).
    """
    del integrator_kind
    devs = local_devices(devices)
    if devs[0].platform != "cpu" or rule.is_gradient:
        return "vmap"
    return "map"


def check_split(strategy: str, rule, devices: Sequence) -> None:
    """Refuse the one combination known to hang: ``vmap`` of a curvature rule over several CPU devices.

    jaxlib's CPU LAPACK kernels run a batched eigendecomposition (``eigh`` under ``vmap``) in
    chunks on XLA's intra-op thread pool and block until they finish; several devices doing so
    at once occupy every thread of the pool with waiting callers, and the process hangs
    (reproduced with jaxlib 0.10.2, 4 forced host devices, a batched sqrt-NGD Euler run).

    Raises:
      ValueError: that combination, with the alternatives.
    """
    if strategy == "vmap" and not rule.is_gradient and len(devices) > 1 and devices[0].platform == "cpu":
        raise ValueError(
            f"batch='vmap' of the curvature rule {rule.label} split over {len(devices)} CPU devices deadlocks "
            "jaxlib's CPU eigendecomposition; use batch='map' (or 'auto'), or run on one device (devices=[...])"
        )


def check_strategy(batch: str) -> str:
    """``batch`` if it names a strategy, else ``ValueError`` listing them."""
    if batch not in STRATEGIES:
        raise ValueError(f"unknown batch strategy {batch!r}; choose one of {STRATEGIES}")
    return batch


def local_devices(devices: Sequence | None = None) -> tuple:
    """The devices a batch is split over: ``devices`` as given, else every local device of the
    default backend (:func:`jax.local_devices`).

    Raises:
      ValueError: ``devices`` is empty.
    """
    found = tuple(jax.local_devices() if devices is None else devices)
    if not found:
        raise ValueError("devices must name at least one device")
    return found


def batch_mesh(devices: Sequence) -> Mesh:
    """A 1-D mesh over ``devices`` whose one axis, :data:`BATCH_AXIS`, carries the batch."""
    return Mesh(np.asarray(devices, dtype=object), (BATCH_AXIS,))


def over_members(fn: Callable, strategy: str, batched_args: Sequence[bool]) -> Callable:
    """``fn`` of one member turned into a function ``(active, *args)`` of a batch, by ``strategy``.

    Args:
      fn: a function of positional arguments for one member (returns a pytree of arrays).
      strategy: ``"vmap"`` or ``"map"``.
      batched_args: per positional argument, whether it carries the batch axis (leading axis of
        every leaf) or is shared by all members.

    Returns:
      A function of ``(active, *args)`` whose outputs have a leading batch axis. ``active``
      (bool, one per member) marks the padding of a split batch (:func:`run_split`): under
      ``"map"`` an inactive member is skipped (its outputs are zeros), so padding costs nothing;
      under ``"vmap"`` every member is computed (a branch under ``vmap`` computes both sides).
    """
    flags = tuple(bool(b) for b in batched_args)
    if strategy == "vmap":
        vmapped = jax.vmap(fn, in_axes=tuple(0 if b else None for b in flags))
        return lambda active, *args: vmapped(*args)
    if strategy != "map":
        raise ValueError(f"strategy must be 'vmap' or 'map' here, got {strategy!r}")

    def mapped(active, *args):
        def one(member):
            on, member_args = member
            it = iter(member_args)
            full = tuple(next(it) if b else a for a, b in zip(args, flags))
            shapes = jax.eval_shape(fn, *full)
            skip = lambda _: jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
            return jax.lax.cond(on, lambda f: fn(*f), skip, full)

        return jax.lax.map(one, (active, tuple(a for a, b in zip(args, flags) if b)))

    return mapped


def pad_batch(tree: Any, size: int) -> Any:
    """Pad every leaf's leading axis to ``size`` by repeating its last entry."""

    def pad(x):
        missing = size - x.shape[0]
        if missing <= 0:
            return x
        return jnp.concatenate([x, jnp.repeat(x[-1:], missing, axis=0)])

    return jax.tree_util.tree_map(pad, tree)


def padded_size(batch_size: int, n_devices: int) -> int:
    """The smallest multiple of ``n_devices`` that holds ``batch_size`` members."""
    return -(-batch_size // n_devices) * n_devices


def batched_program(fn: Callable, *, strategy: str, batched_args: Sequence[bool]) -> Callable:
    """The jitted program that runs ``fn`` over a batch by ``strategy`` (:func:`over_members`),
    on whichever one device its inputs are on."""
    return jax.jit(over_members(fn, strategy, batched_args))


def run_split(program: Callable, args: Sequence, batched_args: Sequence[bool], devices: Sequence) -> Any:
    """``program(active, *args)`` with the batch split over ``devices``; the outputs as host arrays.

    The batched arguments are placed with a :class:`jax.sharding.NamedSharding` over the 1-D
    mesh of ``devices`` (:func:`batch_mesh`, batch axis sharded), padded to a multiple of the
    device count by repeating the last member, marked inactive (see :func:`over_members`). Each
    device runs ``program`` on its own shard, the shared arguments replicated to it, all devices
    at once (asynchronous dispatch); the per-device outputs are assembled into global arrays of
    the same sharding (:func:`jax.make_array_from_single_device_arrays`) and brought to the host
    with the padding cut off.

    Every device runs the *same* single-device program as a one-device run (compiled once per
    device, the compilations in parallel threads), so each member's numbers are bitwise those of
    the one-device run. (:func:`jax.shard_map` would compile the
    per-device program through XLA's SPMD partitioner, whose passes rewrite some matrix products
    differently — seen on a block rule's direction: 46 instead of 52 products — and the last-bit
    differences grow along a stiff trajectory to ~1e-6.)

    Args:
      program: a function ``(active, *args)`` (:func:`batched_program`) whose outputs all carry
        the batch axis (a pytree).
      args: the positional arguments; the batched ones have the batch as leading axis of every leaf.
      batched_args: per argument, whether it is batched.
      devices: the devices.

    Returns:
      ``program``'s output pytree, every leaf a NumPy array with the batch as leading axis.
    """
    devices = tuple(devices)
    flags = tuple(bool(b) for b in batched_args)
    size = jax.tree_util.tree_leaves([a for a, b in zip(args, flags) if b])[0].shape[0]
    padded = padded_size(size, len(devices))
    active = np.arange(padded) < size
    sharding = NamedSharding(batch_mesh(devices), PartitionSpec(BATCH_AXIS))
    placed = [jax.device_put(active, sharding)]
    placed += [jax.device_put(pad_batch(a, padded), sharding) if b else a for a, b in zip(args, flags)]
    flags = (True, *flags)

    def shard_on(device, tree):
        return jax.tree_util.tree_map(lambda x: next(s.data for s in x.addressable_shards if s.device == device), tree)

    def launch(device):
        return program(*(shard_on(device, a) if b else jax.device_put(a, device) for a, b in zip(placed, flags)))

    # One thread per device: the first call compiles the program for that device (XLA releases the
    # GIL while it compiles, so the compilations overlap); later calls return at once (asynchronous
    # dispatch) and the devices compute at the same time.
    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="curvdyn-device") as pool:
        outputs = dict(zip(devices, pool.map(launch, devices)))
    treedef = jax.tree_util.tree_structure(outputs[devices[0]])
    assembled = []
    for pieces in zip(*(jax.tree_util.tree_leaves(outputs[d]) for d in devices)):
        shape = (padded,) + pieces[0].shape[1:]
        by_device = dict(zip(devices, pieces))
        ordered = [by_device[d] for d in sharding.addressable_devices_indices_map(shape)]
        whole = jax.make_array_from_single_device_arrays(shape, sharding, ordered)
        assembled.append(np.asarray(whole)[:size])
    return jax.tree_util.tree_unflatten(treedef, assembled)
