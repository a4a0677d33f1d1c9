"""Rollout throughput of the external-environment adapters against their own libraries.

For each environment, two programs of the same work: ``jax.jit`` of ``jax.vmap`` over ``--batch``
instances of a ``lax.scan`` over ``--steps`` time steps, open loop on uniform random actions generated
up front, summing the rewards (so nothing is dead code):

* own: the library's own step: gymnax's ``step_env(key, state, action, params)`` with a key split off a
  carried key every step (as gymnax loops do; no autoreset), or brax's ``env.step(state, action)``;
* adapter: the functional-environment protocol of :mod:`diffenvs.external` (``transition``, ``reward``
  and ``terminal`` per step), from ``make_gymnax_env`` / ``make_brax_env``.

Only the compiled calls are timed (after a warm-up call of each), with ``block_until_ready``: the two
programs are called in turn ``--repeats`` times and each one's fastest call counts, since other load on
the machine only ever slows a call down. Overhead = own steps/s / adapter steps/s - 1 (the extra time
per step).

    python benchmarks/adapter_throughput.py                        # gymnax rows and one brax row
    python benchmarks/adapter_throughput.py --brax-envs            # gymnax rows only
    python benchmarks/adapter_throughput.py --batch 256 --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any, Callable

GYMNAX_ENVS = ["Pendulum-v1", "MountainCarContinuous-v0", "Reacher-misc", "Swimmer-misc", "PointRobot-misc"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024, help="instances per rollout")
    parser.add_argument("--steps", type=int, default=200, help="time steps per rollout")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of each program; the fastest counts")
    parser.add_argument("--gymnax-envs", nargs="*", default=GYMNAX_ENVS, metavar="ENV_ID",
                        help="gymnax environment ids (with transition gradients)")
    parser.add_argument("--brax-envs", nargs="*", default=["inverted_pendulum"], metavar="NAME",
                        help="brax environment names (compiling a brax pipeline takes minutes on a small CPU)")
    parser.add_argument("--brax-pipeline", default="generalized", help="brax pipeline of the brax rows")
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def steps_per_second(programs: list[Callable[..., Any]], arguments: tuple, work: int,
                     repeats: int) -> list[float]:
    """Env steps/s of each compiled ``program(*arguments)``: after a warm-up call of each, the programs
    are called in turn ``repeats`` times and each one's fastest call counts (the machine's other load
    only ever slows a call down)."""
    import jax
    for program in programs:
        jax.block_until_ready(program(*arguments))
    durations: list[list[float]] = [[] for _ in programs]
    for _ in range(repeats):
        for program, times in zip(programs, durations):
            start = time.perf_counter()
            jax.block_until_ready(program(*arguments))
            times.append(time.perf_counter() - start)
    return [work / min(times) for times in durations]


def adapter_program(env: Any) -> Callable:
    """jit(vmap(scan)) of the protocol: transition, reward and terminal per step."""
    import jax
    import jax.numpy as jnp

    def rollout(start, actions):
        def body(carry, action):
            state, total = carry
            next_state = env.transition(state, action)
            reward = env.reward(state, action, next_state)
            return (next_state, total + jnp.where(env.terminal(next_state), 0.0, reward)), None
        return jax.lax.scan(body, (start, 0.0 * env.reward(start, actions[0], start)), actions)[0][1]

    return jax.jit(jax.vmap(rollout))


def measure(label: str, own_rollout: Callable, adapter: Any, starts: Any, actions: Any,
            args: argparse.Namespace) -> tuple[str, float, float]:
    """(label, own steps/s, adapter steps/s) of the batched own rollout and the adapter's."""
    import jax
    own_rate, adapter_rate = steps_per_second([jax.jit(jax.vmap(own_rollout)), adapter_program(adapter)],
                                              (starts, actions), args.batch * args.steps, args.repeats)
    print(f"  {label}: done", flush=True)
    return label, own_rate, adapter_rate


def gymnax_rows(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    import gymnax
    import jax
    import jax.numpy as jnp

    from diffenvs.external import make_gymnax_env

    rows = []
    for env_id in args.gymnax_envs:
        adapter = make_gymnax_env(env_id, num_steps=args.steps)
        own, params = gymnax.make(env_id)
        own = own.with_transition_gradients()
        params = adapter.default_params
        keys = jax.random.split(jax.random.PRNGKey(0), args.batch)
        starts = jax.jit(jax.vmap(adapter.initial))(keys)
        low, high = own.action_space(params).low, own.action_space(params).high
        actions = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, args.steps, *adapter.action_shape()),
                                     minval=low, maxval=high)

        def own_rollout(start, episode_actions):
            def body(carry, action):
                state, key, total = carry
                key, step_key = jax.random.split(key)
                _, state, reward, terminated, _ = own.step_env(step_key, state, action, params)
                return (state, key, total + jnp.where(terminated, 0.0, reward)), None
            return jax.lax.scan(body, (start.env_state, start.key, 0.0 * start.reward), episode_actions)[0][2]

        rows.append(measure(f"gymnax {env_id}", own_rollout, adapter, starts, actions, args))
    return rows


def brax_rows(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    import jax
    import jax.numpy as jnp

    from diffenvs.external import make_brax_env

    rows = []
    for name in args.brax_envs:
        adapter = make_brax_env(name, pipeline=args.brax_pipeline, num_steps=args.steps)
        own = adapter.env
        starts = jax.jit(jax.vmap(adapter.initial))(jax.random.split(jax.random.PRNGKey(0), args.batch))
        actions = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, args.steps, own.action_size),
                                     minval=-1.0, maxval=1.0)

        def own_rollout(start, episode_actions):
            def body(carry, action):
                state, total = carry
                state = own.step(state, action)
                return (state, total + jnp.where(state.done > 0.5, 0.0, state.reward)), None
            return jax.lax.scan(body, (start, 0.0 * start.reward), episode_actions)[0][1]

        rows.append(measure(f"brax {name} ({adapter.pipeline})", own_rollout, adapter, starts, actions, args))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import jax
    print(f"jax {jax.__version__}, {jax.default_backend()}, {platform.processor() or platform.machine()}; "
          f"batch {args.batch}, {args.steps} steps, fastest of {args.repeats} interleaved calls", flush=True)
    rows = gymnax_rows(args) + brax_rows(args)
    width = max([len("env")] + [len(label) for label, _, _ in rows])
    print(f"\n{'env':<{width}}  {'own steps/s':>12}  {'adapter steps/s':>15}  {'overhead %':>10}")
    for label, own_rate, adapter_rate in rows:
        print(f"{label:<{width}}  {own_rate:>12.4g}  {adapter_rate:>15.4g}  {100 * (own_rate / adapter_rate - 1):>10.1f}")


if __name__ == "__main__":
    main()
