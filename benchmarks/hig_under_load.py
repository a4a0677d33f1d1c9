"""hig's half-inverse step idle and beside one other CPU-bound process: host (numpy, float64) with numpy's
BLAS threads as they are and limited to one, against on-device float32 alternatives.

Part 1, one update of the one-pole cart-pole (study protocol, batch 8: J is 800 x 10701): the seconds per
call (median of ``--repeats``) of

* ``host, BLAS threads as numpy has them``: ``hig._half_inverse_numpy`` without a thread limit;
* ``host, 1 BLAS thread``: ``hig._half_inverse_host``, what the strategy runs (``HOST_BLAS_THREADS = 1``);
* ``device float32 Gram + eigh``: ``jnp.linalg.eigh(J Jᵀ)`` in float32 (with ``--device``);
* ``device float64 Gram + eigh``: the same in float64, what a run in float64 (JAX x64 mode) could do on
  the device instead (with ``--device``);
* ``device float32 QR + SVD``: ``J = Rᵀ Qᵀ`` from ``jnp.linalg.qr(Jᵀ)``, then the SVD of the 800 x 800 R
  (with ``--device``),

and, for each, the singular values kept (rank) and the relative difference of the update from the host's.
Part 2: seconds per training epoch of ``hig`` (median ``epoch_seconds``, compilation excluded) with and
without the thread limit, and the numbers of BLAS threads numpy's BLAS reported inside the host step
(threadpoolctl) during those epochs. Each part runs idle, then with one busy process (``python -c "while True:
pass"``, started and stopped by this script) beside it. The machine's load average is printed: numbers
taken while other work runs are not idle numbers.

    python benchmarks/hig_under_load.py --repeats 3 --epochs 2 --device
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_info

from trainers.engine import initial_states
from trainers.presets import study_preset
from trainers.strategies.hig import control_jacobian, control_sensitivities
from trainers.training import train

TRUNCATION = 1e-5
hig = importlib.import_module("trainers.strategies.hig")   # the module (trainers.strategies.hig is the factory)


@contextlib.contextmanager
def busy_neighbour(active: bool) -> Iterator[None]:
    """One other CPU-bound process for the duration (none when not ``active``)."""
    if not active:
        yield
        return
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        yield
    finally:
        process.terminate()
        process.wait()


@jax.jit
def device_gram_eigh(jacobian: jax.Array, vector: jax.Array) -> tuple[jax.Array, jax.Array]:
    eigenvalues, vectors = jnp.linalg.eigh(jacobian @ jacobian.T)
    singular = jnp.sqrt(jnp.maximum(eigenvalues, 0.0))
    keep = singular > TRUNCATION * singular.max()
    weights = jnp.where(keep, jnp.where(keep, singular, 1.0) ** -1.5, 0.0)
    return jacobian.T @ (vectors @ (weights * (vectors.T @ vector))), keep.sum()


@jax.jit
def device_qr_svd(jacobian: jax.Array, vector: jax.Array) -> tuple[jax.Array, jax.Array]:
    q, r = jnp.linalg.qr(jacobian.T)                   # Jᵀ = Q R, so J = Rᵀ Qᵀ
    u, singular, wt = jnp.linalg.svd(r.T)              # Rᵀ = U S Wᵀ, so J = U S (Q W)ᵀ
    keep = singular > TRUNCATION * singular.max()
    weights = jnp.where(keep, jnp.where(keep, singular, 1.0) ** -0.5, 0.0)
    return q @ (wt.T @ (weights * (u.T @ vector))), keep.sum()


def in_float64(method: Callable[..., Any], *arrays: np.ndarray) -> Any:
    """``method`` on float64 copies of ``arrays``, compiled and run with JAX's x64 mode on."""
    with jax.enable_x64(True):
        return jax.block_until_ready(method(*(jnp.asarray(array, jnp.float64) for array in arrays)))


def blas_threads() -> list[int]:
    """The thread counts numpy's BLAS libraries report now (threadpoolctl)."""
    return sorted({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})


def seconds(call: Callable[[], Any], repeats: int) -> float:
    call()                                             # compilation and caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def update_table(repeats: int, device: bool) -> None:
    config = study_preset("cartpole", 1, strategy="hig")
    problem = config.make_problem()
    params = problem.controller.init(jax.random.PRNGKey(0))
    states = initial_states(problem.env, jax.random.PRNGKey(1), config.batch_size)

    @jax.jit
    def parts(params: Any, states: Any) -> tuple[jax.Array, jax.Array]:
        _, sensitivities, trajectory = control_sensitivities(problem, params, states)
        return control_jacobian(problem, params, trajectory), sensitivities.reshape(-1)

    jacobian, vector = parts(params, states)
    host_j, host_v = np.asarray(jacobian), np.asarray(vector)
    reference, rank = hig._half_inverse_host(host_j, host_v, TRUNCATION)
    methods: list[tuple[str, Callable[[], Any]]] = [
        ("host, BLAS threads as numpy has them", lambda: hig._half_inverse_numpy(host_j, host_v, TRUNCATION)),
        ("host, 1 BLAS thread (hig's)", lambda: hig._half_inverse_host(host_j, host_v, TRUNCATION)),
    ]
    if device:
        methods += [("device float32 Gram + eigh", lambda: device_gram_eigh(jacobian, vector)),
                    ("device float64 Gram + eigh", lambda: in_float64(device_gram_eigh, host_j, host_v)),
                    ("device float32 QR + SVD", lambda: device_qr_svd(jacobian, vector))]
    print(f"\none update, cart-pole 1 pole, J {host_j.shape[0]} x {host_j.shape[1]}, truncation {TRUNCATION:g}: "
          f"seconds per call (median of {repeats}); host float64 reference keeps {int(rank)} singular values")
    print(f"{'method':<40}{'rank':>6}{'rel. diff':>11}{'idle s':>9}{'loaded s':>10}{'loaded/idle':>13}")
    for name, call in methods:
        update, kept = call()
        difference = np.linalg.norm(np.asarray(update, np.float64) - reference) / np.linalg.norm(reference)
        idle = seconds(call, repeats)
        with busy_neighbour(True):
            loaded = seconds(call, repeats)
        print(f"{name:<40}{int(kept):>6}{difference:>11.2e}{idle:>9.3f}{loaded:>10.3f}{loaded / idle:>13.2f}",
              flush=True)


def epoch_table(epochs: int) -> None:
    print(f"\nhig training epoch, cart-pole 1 pole, study protocol: median epoch_seconds of {epochs} epochs")
    print(f"{'numpy BLAS threads':<30}{'idle s':>9}{'loaded s':>10}{'loaded/idle':>13}  threads seen in the host step")
    numpy_only = hig._half_inverse_numpy
    seen: set[int] = set()

    def recording(jacobian: np.ndarray, vector: np.ndarray, truncation: float) -> Any:
        seen.update(blas_threads())
        return numpy_only(jacobian, vector, truncation)

    hig._half_inverse_numpy = recording
    try:
        for threads in (None, 1):
            hig.HOST_BLAS_THREADS = threads
            measured = []
            seen.clear()
            for loaded in (False, True):
                with busy_neighbour(loaded):
                    result = train(study_preset("cartpole", 1, strategy="hig", epochs=epochs), quiet=True)
                measured.append(statistics.median(row["epoch_seconds"] for row in result.metrics[1:]))
            label = "as numpy has them" if threads is None else f"{threads} (hig's)"
            print(f"{label:<30}{measured[0]:>9.2f}{measured[1]:>10.2f}{measured[1] / measured[0]:>13.2f}  "
                  f"{sorted(seen)}", flush=True)
    finally:
        hig.HOST_BLAS_THREADS = 1
        hig._half_inverse_numpy = numpy_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method and condition (>= 1)")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per run (>= 1; 0 skips part 2)")
    parser.add_argument("--device", action="store_true", help="also time the on-device float32 alternatives "
                                                              "(the QR + SVD takes tens of seconds per call)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be an integer >= 1, got {args.repeats}")
    if args.epochs < 0:
        parser.error(f"--epochs must be an integer >= 0, got {args.epochs}")
    blas = ", ".join(f"{info['internal_api']} {info['version']} ({info['num_threads']} threads)"
                     for info in threadpool_info() if info["user_api"] == "blas")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}), "
          f"numpy {np.__version__} with {blas}; load average {os.getloadavg()[0]:.1f} at start")
    update_table(args.repeats, args.device)
    if args.epochs:
        epoch_table(args.epochs)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
