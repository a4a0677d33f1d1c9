"""Half-inverse gradients (HIG) through the rollout.

Schnell, Holl & Thuerey, "Half-Inverse Gradients for Physical Deep Learning", ICLR 2022. Their update
is Δθ = −η (∂y/∂θ)^{-1/2} (∂L/∂y)ᵀ, with y the network outputs of the whole batch stacked into one
Jacobian and the half-inverse of a matrix A = U S Vᵀ (SVD) defined as A^{-1/2} = V S^{-1/2} Uᵀ, singular
values below a threshold τ set to zero (truncated, not clamped).

In the closed-loop rollout the network outputs are the controls y = (c_{t,i}) of every step t and
episode i of the batch, flattened to M = steps · batch · action size entries:

* J (M × P, P = number of params) stacks each control's Jacobian ∂N(o_{t,i}; θ)/∂θ at the rollout's own
  states (one row per control entry, the states held fixed: the partial Jacobian P_t of
  docs/strategies.md);
* ∂L/∂y (M) is each control's total loss sensitivity μ_t: the gradient of the batch loss with respect to
  an additive offset on that control, through the rest of the rollout (simulator and network
  feedback alike). Jᵀ ∂L/∂y is then exactly the ``bptt`` gradient;
* the update, to be descended, is V S^{-1/2} Uᵀ ∂L/∂y with J = U S Vᵀ, singular values
  s < ``truncation`` · max(s) dropped (computed from the eigendecomposition of the smaller Gram matrix
  in float64 on the host, :func:`half_inverse_apply`).

``truncation`` (1e-5): the threshold relative to the largest singular value (the paper's τ, made
relative so that it does not depend on the network's output scale); 0 keeps every nonzero singular
value. The paper descends the HIG direction with plain gradient descent; the library applies its
optimizer (Adam by default) to the update, so for the paper's scheme choose ``optimizer="sgd"``.

Cost: J has M × P entries; the Gram matrix costs O(min(M, P)² · max(M, P)) and its eigendecomposition
O(min(M, P)³) per update. At the study's
hardest levels with batch 8 (P ≈ 11 000–13 000 params): cart-pole 100 · 8 = 800 rows, guidance
60 · 8 · 4 = 1920, quantum control 128 · 8 = 1024 (``benchmarks/strategy_cost.py`` measures the
epoch time). Metric ``hig_rank``: the number of singular values kept.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from trainers.rollout import Problem, State
from trainers.strategies.base import Strategy, StrategyResult, register

Array = jax.Array


def control_sensitivities(problem: Problem, params: Any, states: State) -> tuple[Array, Array, State]:
    """(batch loss, ∂L/∂c (steps, batch, *action), the states the controls were computed at
    (the state pytree with leading axes (steps, batch))): one forward and one backward pass."""
    def loss_with_offsets(offsets: Array):
        def body(current: State, offset: Array):
            controls = problem.control(params, current) + offset
            next_states, loss = problem.simulate(current, controls)
            return next_states, (loss, current)
        _, (losses, trajectory) = jax.lax.scan(body, states, offsets)
        return jnp.sum(losses), trajectory

    controls = problem.control(params, states)
    offsets = jnp.zeros((problem.num_steps, *controls.shape), controls.dtype)
    (loss, trajectory), sensitivities = jax.value_and_grad(loss_with_offsets, has_aux=True)(offsets)
    return loss, sensitivities, trajectory


def control_jacobian(problem: Problem, params: Any, trajectory: State) -> Array:
    """J (steps · batch · action size, number of params): each control's gradient with respect to the
    flattened params at its own state, rows in the order of ``sensitivities.reshape(-1)``."""
    flat, unravel = ravel_pytree(params)
    states = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), trajectory)

    def one(state: State) -> Array:                          # (action size, params)
        single = jax.tree.map(lambda x: x[None], state)
        return jax.jacrev(lambda q: problem.control(unravel(q), single).reshape(-1))(flat)

    jacobians = jax.vmap(one)(states)
    return jacobians.reshape(-1, flat.shape[0])


HOST_BLAS_THREADS: int | None = 1
"""Threads of numpy's BLAS (OpenBLAS) while the host computes the half-inverse; None leaves numpy's
setting. One: OpenBLAS's threads wait for each other by spinning, so beside XLA's threads and any other
busy process they lose most of their time to waiting (the decomposition of the one-pole cart-pole took
several times longer beside one other CPU-bound process with numpy's two threads than with one;
``benchmarks/hig_under_load.py``), and one thread was the faster on a 2-core machine in every
measurement."""


def _release_blas_control() -> None:
    """Let any thread change OpenBLAS's thread count again.

    OpenBLAS built with pthreads (numpy's wheels) has one thread pool for the whole process, and
    threadpoolctl (3.8 and later) lets only the first thread that limits it (its "controlling thread")
    change it, ignoring the others silently until that thread releases control. jax runs the host
    callback on whichever thread executes the program (the main thread or one of its own), so the
    limiter releases control before it sets or restores the count (taking it over from any thread that
    still holds it; the setting is process-wide in any case) and right after (so that no thread is left
    holding it). Older threadpoolctl has no controlling thread, and this does nothing."""
    import threadpoolctl
    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


class _HostBlasThreads:
    """While any host decomposition runs, numpy's BLAS uses :data:`HOST_BLAS_THREADS` threads, whichever
    thread runs it; the process's own setting is restored when the last one ends (callbacks of a group
    split over several devices may run at the same time, on different threads)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._users = 0
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._guard:
            if self._users == 0 and HOST_BLAS_THREADS is not None:
                from threadpoolctl import ThreadpoolController   # a fresh look: BLAS libraries loaded since
                _release_blas_control()
                try:
                    self._limiter = ThreadpoolController().limit(limits=HOST_BLAS_THREADS, user_api="blas")
                finally:
                    _release_blas_control()
            self._users += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._guard:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                limiter, self._limiter = self._limiter, None
                _release_blas_control()
                try:
                    limiter.restore_original_limits()
                finally:
                    _release_blas_control()


_host_blas_threads = _HostBlasThreads()


def _half_inverse_host(jacobian: np.ndarray, vector: np.ndarray, truncation: float) -> tuple[np.ndarray, np.ndarray]:
    """numpy, float64, BLAS limited to :data:`HOST_BLAS_THREADS`: see :func:`half_inverse_apply`."""
    with _host_blas_threads:
        return _half_inverse_numpy(jacobian, vector, truncation)


def _half_inverse_numpy(jacobian: np.ndarray, vector: np.ndarray, truncation: float) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.asarray(jacobian, np.float64)
    target = np.asarray(vector, np.float64)
    rows, columns = matrix.shape
    small = matrix @ matrix.T if rows <= columns else matrix.T @ matrix
    eigenvalues, vectors = np.linalg.eigh(small)
    singular = np.sqrt(np.maximum(eigenvalues, 0.0))
    keep = (singular > truncation * singular.max()) & (singular > 0)
    weights = np.zeros_like(singular)
    weights[keep] = singular[keep] ** -1.5
    if rows <= columns:
        update = matrix.T @ (vectors @ (weights * (vectors.T @ target)))
    else:
        update = vectors @ (weights * (vectors.T @ (matrix.T @ target)))
    return update.astype(jacobian.dtype), np.asarray(keep.sum(), np.int32)


def half_inverse_apply(jacobian: Array, vector: Array, truncation: float) -> tuple[Array, Array]:
    """(V S^{-1/2} Uᵀ vector for J = U S Vᵀ, singular values below ``truncation`` · max dropped; number kept).

    Computed on the host (``jax.pure_callback``, numpy, float64 whatever the run's precision) from the
    eigendecomposition of the smaller Gram matrix: with J Jᵀ = U S² Uᵀ (M <= P) the update is
    Jᵀ U S^{-3/2} Uᵀ vector, with Jᵀ J = V S² Vᵀ (M > P) it is V S^{-3/2} Vᵀ Jᵀ vector, the SVD's numbers
    in exact arithmetic. Float64 keeps the singular values accurate to about 1e-8 of the largest (the
    squares lose half the digits), below any useful truncation of a float32 Jacobian. On this project's
    2-core CPU, ``jnp.linalg.svd`` of the 800 × 11301 cart-pole Jacobian took 139 s per update and a
    float64 Gram matrix in jax can not be formed inside a float32 vmapped program; this takes seconds.
    On-device float32 alternatives measured against it (``benchmarks/hig_under_load.py``): the Gram
    matrix's ``jnp.linalg.eigh`` loses the small singular values to float32 (hundreds of spurious ones
    kept), and a QR of Jᵀ followed by the SVD of its triangle is accurate but slower than this; in a
    float64 run (JAX x64 mode) the Gram matrix's ``jnp.linalg.eigh`` is as accurate but took 3 to 8 times
    longer. Numpy's BLAS runs single-threaded here (:data:`HOST_BLAS_THREADS`, on whichever thread jax
    runs the callback), which keeps it from slowing down several times beside other busy processes.
    Under ``vmap`` (a sweep group) the runs are computed one after the other.
    """
    result_shapes = (jax.ShapeDtypeStruct((jacobian.shape[1],), jacobian.dtype),
                     jax.ShapeDtypeStruct((), jnp.int32))
    return jax.pure_callback(lambda j, v: _half_inverse_host(j, v, truncation), result_shapes,
                             jacobian, vector, vmap_method="sequential")


@register
def hig(truncation: float = 1e-5) -> Strategy:
    """Half-inverse gradients (Schnell, Holl & Thuerey, ICLR 2022); see the module docstring."""
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or \
            not (math.isfinite(truncation) and 0 <= truncation < 1):
        raise ValueError(f"hig: truncation must be a number in [0, 1) (relative to the largest singular "
                         f"value), got {truncation!r}")
    relative = float(truncation)

    def compute(problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
        loss, sensitivities, trajectory = control_sensitivities(problem, params, states)
        jacobian = control_jacobian(problem, params, trajectory)
        flat_update, rank = half_inverse_apply(jacobian, sensitivities.reshape(-1), relative)
        _, unravel = ravel_pytree(params)
        return StrategyResult(loss, unravel(flat_update), {"hig_rank": rank.astype(loss.dtype)})

    return Strategy(f"hig({relative:g})", compute, "half-inverse gradients of the controls' Jacobian",
                    metric_names=("hig_rank",))
