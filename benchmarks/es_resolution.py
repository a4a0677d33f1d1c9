"""Can the `es` estimate resolve each task's loss at the initial parameters?

``es(population, noise)`` estimates the gradient from the antithetic differences
L(θ + σε) - L(θ - σε). Where these differences are smaller than the floating-point spacing of the
loss itself, both losses round to the same number, the difference is exactly 0 and so is the update.
For each task and noise σ this prints, at the initial parameters of seed 0 and the first training
batch of 8 (the study protocol): the loss at θ, the spacing of the loss's dtype there, how many of
``--pairs`` antithetic differences are nonzero, their largest magnitude, and the norm of the library's
own ``es`` update on that batch.

    python benchmarks/es_resolution.py            # float32, the library's default
    python benchmarks/es_resolution.py --x64      # float64, the same θ and batch (cast), true sizes
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

CASES = (("cartpole", 4), ("guidance", 0.001), ("quantum", 3), ("quantum", 4), ("quantum", 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--x64", action="store_true", help="compute in float64")
    parser.add_argument("--noises", type=float, nargs="+", default=[0.02, 0.1, 0.5])
    parser.add_argument("--pairs", type=int, default=64, help="antithetic pairs per case and noise")
    args = parser.parse_args()

    from trainers.presets import study_preset
    from trainers.rollout import rollout_loss
    from trainers.strategies import es
    from trainers.training import initial_states, tree_squared_norm

    def make_problem(task: str, level: float) -> tuple:
        config = study_preset(task, level, strategy="es")
        return config, config.make_problem()

    # θ and the batch are drawn in float32 (random draws differ between dtypes), then cast.
    drawn = {}
    for task, level in CASES:
        config, problem = make_problem(task, level)
        train_key, _, init_key, strategy_key = jax.random.split(jax.random.PRNGKey(config.seed), 4)
        batch = jax.tree.map(lambda s: s[:config.batch_size],
                             initial_states(problem.env, train_key, config.num_train))
        drawn[task, level] = jax.device_get((problem.controller.init(init_key), batch, strategy_key))
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32
    cast = lambda tree: jax.tree.map(
        lambda a: jnp.asarray(a, dtype) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a), tree)

    print(f"jax {jax.__version__}, {'float64' if args.x64 else 'float32'}; seed 0, first batch of 8, "
          f"{args.pairs} antithetic pairs per row")
    print(f"{'case':18} {'noise':>6} {'L(theta)':>16} {'spacing':>9} {'nonzero':>9} "
          f"{'max |diff|':>10} {'|es update|':>11}")
    for task, level in CASES:
        _, problem = make_problem(task, level)
        params, batch, strategy_key = drawn[task, level]
        params, batch, strategy_key = cast(params), cast(batch), jnp.asarray(strategy_key)
        loss = jax.jit(lambda p: rollout_loss(problem, p, batch))
        loss_at_theta = loss(params)
        spacing = float(jnp.spacing(loss_at_theta))
        leaves, treedef = jax.tree.flatten(params)
        for noise in args.noises:
            keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
            directions = treedef.unflatten([jax.random.normal(k, (args.pairs, *leaf.shape), leaf.dtype)
                                            for k, leaf in zip(keys, leaves)])
            shifted = lambda sign: jax.lax.map(
                loss, jax.tree.map(lambda p, d: p + sign * noise * d, params, directions))
            differences = np.asarray(shifted(1.0) - shifted(-1.0))
            update = es(2 * args.pairs, noise)(problem, params, batch, strategy_key).update
            update_norm = float(jnp.sqrt(tree_squared_norm(update)))
            print(f"{task + ':' + str(level):18} {noise:6g} {float(loss_at_theta):16.9g} {spacing:9.2g} "
                  f"{np.count_nonzero(differences):4d} / {differences.size:<3d} "
                  f"{np.abs(differences).max():10.3g} {update_norm:11.3g}")


if __name__ == "__main__":
    main()
