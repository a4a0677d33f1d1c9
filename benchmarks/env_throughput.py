"""Environment throughput: environment steps per second (instances x time steps) of every environment.

Prints one table with, for each environment:

(a) a fused rollout: one ``jax.jit`` of ``jax.vmap`` over instances of a ``lax.scan`` over time of
    ``transition`` + ``reward``, open loop on random normal actions generated up front on the device.
    Only the compiled call is timed (after a warm-up call), with ``block_until_ready``. Several batch
    sizes and device counts are tried and the best median is reported with its configuration. With
    ``--host-devices N`` (default: the number of CPU cores) the script sets
    ``--xla_force_host_platform_device_count=N`` in ``XLA_FLAGS`` before importing JAX, so that the
    batch can be split over N host "devices" (one thread each) with ``jax.shard_map``: XLA's CPU
    backend runs the loop body of a scan on one thread otherwise.
(b) the Python step loop of ``gym.make_vec(id, num_envs=--num-envs)``: actions sampled once up front
    as a numpy array and reused, warm-up past the first autoreset (so the reset path is compiled),
    then ``--steps`` ``step`` calls timed per repeat.

Side by side in the same run: Gymnasium's numpy ``CartPole-v1`` vector env
(``vectorization_mode="vector_entry_point"``) and its phys2d ``CartPoleJaxVectorEnv``, both at
``--num-envs`` environments. Every figure is the median over ``--repeats`` repeats.

    python benchmarks/env_throughput.py                # defaults, a few minutes on 2 CPU cores
    python benchmarks/env_throughput.py --envs cartpole gym-numpy --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ENVIRONMENTS = {
    # key: (label, diffenvs name, parameters, Gymnasium id)
    "cartpole": ("diffenvs CartPole, 1 pole", "CartPole", {"num_poles": 1}, "diffenvs/CartPole-v0"),
    "cartpole4": ("diffenvs CartPole, 4 poles", "CartPole", {"num_poles": 4}, "diffenvs/CartPole-v0"),
    "guidance": ("diffenvs GuidanceByRepulsion 2d/4e", "GuidanceByRepulsion",
                 {"num_drivers": 2, "num_evaders": 4}, "diffenvs/GuidanceByRepulsion-v0"),
    "quantum": ("diffenvs QuantumControl", "QuantumControl", {}, "diffenvs/QuantumControl-v0"),
}
REFERENCES = {
    "gym-numpy": "Gymnasium CartPole-v1 (numpy vector env)",
    "gym-phys2d": "Gymnasium phys2d CartPoleJaxVectorEnv",
}
ALL_KEYS = list(ENVIRONMENTS) + list(REFERENCES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Steps per second (instances x time steps) of the diffenvs environments: a fused "
                    "jit+vmap+scan rollout and the gym.make_vec Python step loop, side by side with "
                    "Gymnasium's numpy CartPole-v1 vector env and its phys2d CartPoleJaxVectorEnv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=4096,
                        help="environments of every Python-step-loop vector env (b)")
    parser.add_argument("--steps", type=int, default=300,
                        help="step() calls timed per repeat of a Python step loop (b)")
    parser.add_argument("--loop-seconds", type=float, default=3.0,
                        help="a repeat of a Python step loop stops early after this many seconds "
                             "(Gymnasium's phys2d env recompiles during its steps and is very slow)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--envs", nargs="+", default=ALL_KEYS, choices=ALL_KEYS, metavar="ENV",
                        help=f"subset of rows, from {ALL_KEYS}")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 16384, 65536],
                        help="instances per fused rollout (a) to try, in increasing order; larger ones "
                             "are skipped once one call takes longer than --max-call-seconds")
    parser.add_argument("--rollout-steps", type=int, default=None,
                        help="time steps of a fused rollout (a); default: each environment's episode length")
    parser.add_argument("--unroll", type=int, default=1, help="lax.scan unroll of the fused rollout (a)")
    parser.add_argument("--host-devices", type=int, default=os.cpu_count() or 1,
                        help="XLA host devices to split the fused rollout's batch over (sets "
                             "--xla_force_host_platform_device_count before importing JAX); both 1 and "
                             "this many devices are tried; 1 turns the split off")
    parser.add_argument("--max-call-seconds", type=float, default=0.5,
                        help="skip larger fused-rollout batch sizes once one call takes longer than this")
    parser.add_argument("--skip-rollout", action="store_true", help="skip the fused rollouts (a)")
    parser.add_argument("--skip-loop", action="store_true", help="skip the Python step loops (b)")
    args = parser.parse_args(argv)
    for name in ("num_envs", "steps", "repeats", "unroll", "host_devices"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.rollout_steps is not None and args.rollout_steps < 1:
        parser.error("--rollout-steps must be >= 1")
    if any(size < 1 for size in args.batch_sizes):
        parser.error("--batch-sizes must be >= 1")
    args.batch_sizes = sorted(set(args.batch_sizes))
    return args


def configure_xla(host_devices: int) -> None:
    """Expose ``host_devices`` CPU devices to JAX; must run before JAX is imported."""
    if "jax" in sys.modules:
        raise RuntimeError("configure_xla must run before jax is imported")
    flags = os.environ.get("XLA_FLAGS", "")
    if host_devices > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={host_devices}".strip()


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 1e6:
        return f"{rate / 1e6:.1f} M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k"
    return f"{rate:.0f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine in clock ticks, from /proc/stat (Linux only)."""
    try:
        with open("/proc/stat") as file:
            values = [int(value) for value in file.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(values) - values[3] - values[4], sum(values)


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_xla(args.host_devices)

    import gymnasium as gym
    import jax
    import jax.monitoring
    import jax.numpy as jnp
    import jaxlib
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import diffenvs

    compiles = [0]
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: compiles.__setitem__(
            0, compiles[0] + (event == "/jax/core/compile/backend_compile_duration")))

    devices = jax.devices()
    device_counts = sorted({1, min(args.host_devices, len(devices))})

    def fused_rollout(key: str) -> tuple[float, str, float] | None:
        """(best median steps/s over batch sizes and device counts, its configuration, best on 1 device)."""
        _, name, params, _ = ENVIRONMENTS[key]
        env = diffenvs.make(name, **params)
        steps = args.rollout_steps or env.num_steps()

        def single(state, actions):
            def body(state, action):
                next_state = env.transition(state, action)
                return next_state, -env.reward(state, action, next_state)

            final, losses = jax.lax.scan(body, state, actions, unroll=args.unroll)
            return final.physics, losses.sum()

        best: tuple[float, str] | None = None
        single_device = 0.0
        for count in device_counts:
            for batch in args.batch_sizes:
                if batch % count:
                    continue
                keys = jax.random.split(jax.random.PRNGKey(0), batch)
                state = jax.vmap(env.initial)(keys)
                actions = jax.random.normal(jax.random.PRNGKey(1), (batch, steps, *env.action_shape()),
                                            state.physics.dtype)
                function = jax.vmap(single)
                if count > 1:
                    mesh = jax.make_mesh((count,), ("batch",), devices=devices[:count])
                    spec = PartitionSpec("batch")
                    function = jax.shard_map(function, mesh=mesh, in_specs=(spec, spec),
                                             out_specs=(spec, spec))
                    sharding = NamedSharding(mesh, spec)
                    state, actions = jax.device_put((state, actions), sharding)
                function = jax.jit(function)
                jax.block_until_ready(function(state, actions))  # compile and warm up
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    jax.block_until_ready(function(state, actions))
                    times.append(time.perf_counter() - start)
                median = statistics.median(times)
                rate = batch * steps / median
                config = f"batch {batch}, {steps} steps, {count} dev"
                print(f"  (a) {key:<10} {config:<32} {format_rate(rate):>8} steps/s  "
                      f"(median {median * 1e3:.1f} ms/call)", flush=True)
                if best is None or rate > best[0]:
                    best = (rate, config)
                if count == 1:
                    single_device = max(single_device, rate)
                if median > args.max_call_seconds:
                    break
        return None if best is None else (*best, single_device)

    def step_loop(key: str) -> tuple[float, float, int]:
        """(median steps/s, median seconds per step() call, compilations while timed)."""
        num_envs = args.num_envs
        warmup = 20
        sync = lambda output: None  # noqa: E731 - numpy outputs are ready
        if key in ENVIRONMENTS:
            _, name, params, gym_id = ENVIRONMENTS[key]
            env = gym.make_vec(gym_id, num_envs=num_envs, **params)
            actions = np.asarray(env.action_space.sample(), np.float32)
            warmup = diffenvs.make(name, **params).num_steps() + 5  # past the first autoreset
        elif key == "gym-numpy":
            env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
            actions = np.asarray(env.action_space.sample())
        else:
            from gymnasium.envs.phys2d.cartpole import CartPoleJaxVectorEnv
            env = CartPoleJaxVectorEnv(num_envs=num_envs)
            actions = jnp.asarray(env.action_space.sample())  # its step takes a JAX array
            warmup = 5
            sync = lambda output: jax.block_until_ready(output[0])  # noqa: E731 - JAX outputs
        env.reset(seed=0)
        output = None
        for _ in range(warmup):
            output = env.step(actions)
        sync(output)
        rates, per_call = [], []
        before = compiles[0]
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = 0
            while done < args.steps:
                output = env.step(actions)
                done += 1
                if time.perf_counter() - start > args.loop_seconds:
                    break
            sync(output)
            elapsed = time.perf_counter() - start
            rates.append(num_envs * done / elapsed)
            per_call.append(elapsed / done)
        env.close()
        rate, call = statistics.median(rates), statistics.median(per_call)
        print(f"  (b) {key:<10} {num_envs} envs{'':<21} {format_rate(rate):>8} steps/s  "
              f"({call * 1e6:.0f} us per step call)", flush=True)
        return rate, call, compiles[0] - before

    load_before = os.getloadavg()
    jiffies_before, own_before, wall_before = cpu_jiffies(), own_cpu_seconds(), time.perf_counter()
    print(f"machine: {os.cpu_count()} CPU cores ({cpu_model()}), {platform.system()} {platform.machine()}, "
          f"Python {platform.python_version()}")
    print(f"jax {jax.__version__} (jaxlib {jaxlib.__version__}), backend {jax.default_backend()}, "
          f"{len(devices)} device(s) {devices}, numpy {np.__version__}, gymnasium {gym.__version__}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; load average before: "
          + " ".join(f"{value:.2f}" for value in load_before))
    print("progress:", flush=True)

    rows = []
    for key in args.envs:
        label = ENVIRONMENTS[key][0] if key in ENVIRONMENTS else REFERENCES[key]
        fused = fused_rollout(key) if key in ENVIRONMENTS and not args.skip_rollout else None
        loop = None if args.skip_loop else step_loop(key)
        rows.append((key, label, fused, loop))

    header = ("environment", "(a) fused jit+vmap+scan", "(a) best configuration", "(a) best on 1 device",
              f"(b) make_vec loop, {args.num_envs} envs", "(b) per step()")
    table = [header]
    for key, label, fused, loop in rows:
        note = ""
        if loop is not None and loop[2]:
            note = f", {loop[2]} recompiles"
        table.append((label,
                      f"{format_rate(fused[0])} steps/s" if fused else "-",
                      fused[1] if fused else "-",
                      f"{format_rate(fused[2])} steps/s" if fused and fused[2] else "-",
                      f"{format_rate(loop[0])} steps/s" if loop else "-",
                      f"{loop[1] * 1e6:.0f} us{note}" if loop else "-"))
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    line = "+" + "+".join("-" * (width + 2) for width in widths) + "+"
    print()
    print(f"Environment steps per second (instances x time steps), median of {args.repeats} repeats; "
          f"(a) random normal open-loop actions, scan unroll {args.unroll}, best over batch sizes "
          f"{args.batch_sizes} and {device_counts} host device(s); (b) {args.steps} step() calls per "
          f"repeat (at most {args.loop_seconds:g} s), actions sampled once.")
    print(line)
    for index, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(width) if column < 1 else cell.rjust(width)
                                for column, (cell, width) in enumerate(zip(row, widths))) + " |")
        if index == 0:
            print(line)
    print(line)
    load = "load average after: " + " ".join(f"{value:.2f}" for value in os.getloadavg())
    jiffies_after = cpu_jiffies()
    if jiffies_before and jiffies_after and jiffies_after[1] > jiffies_before[1]:
        ticks = os.sysconf("SC_CLK_TCK")
        total = (jiffies_after[1] - jiffies_before[1]) / ticks  # CPU-seconds of all cores
        busy = (jiffies_after[0] - jiffies_before[0]) / ticks
        others = max(0.0, busy - (own_cpu_seconds() - own_before))
        load += (f"; during the run ({time.perf_counter() - wall_before:.0f} s) other processes used "
                 f"{100 * others / total:.0f}% of the machine's CPU time")
    print(load)

    by_key = {key: (fused, loop) for key, _, fused, loop in rows}
    if "cartpole" in by_key and by_key["cartpole"][0] is not None:
        rate = by_key["cartpole"][0][0]
        print(f"target (a) fused CartPole (1 pole) >= 50 M steps/s: "
              f"{'MET' if rate >= 50e6 else 'NOT MET'} ({format_rate(rate)} steps/s, "
              f"{by_key['cartpole'][0][1]}; {format_rate(by_key['cartpole'][0][2])} steps/s on 1 device)")
    if "cartpole" in by_key and "gym-numpy" in by_key and by_key["cartpole"][1] and by_key["gym-numpy"][1]:
        ours, theirs = by_key["cartpole"][1][0], by_key["gym-numpy"][1][0]
        print(f"target (b) make_vec CartPole >= Gymnasium numpy CartPole-v1: "
              f"{'MET' if ours >= theirs else 'NOT MET'} ({format_rate(ours)} vs {format_rate(theirs)} "
              f"steps/s, ratio {ours / theirs:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
