"""Regenerate the frames shown in docs/environments-reference.md: ``python docs/make_frames.py``.

Every frame is ``env.render_image(state)`` of a real state of the environment (float32, CPU).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optax  # noqa: E402

import diffenvs  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def save(name: str, env, state) -> None:
    _, frame = env.render_image(state)
    plt.imsave(OUT / name, frame)
    print(OUT / name, frame.shape)


def optimised_final_state(env, state, steps: int = 500, learning_rate: float = 0.1):
    """Final state of an open-loop control sequence optimised by Adam on ``env.episode_loss``."""
    actions = jnp.zeros((env.num_steps(), *env.action_shape()))
    loss_and_grad = jax.jit(jax.value_and_grad(lambda a: env.episode_loss(state, a)))
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(actions)
    for _ in range(steps):
        _, grad = loss_and_grad(actions)
        updates, opt_state = optimizer.update(grad, opt_state)
        actions = optax.apply_updates(actions, updates)
    final, losses = env.rollout(state, actions)
    print(f"{env.name}: optimised open-loop loss {float(losses.sum()):.3g}")
    return final


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(0)

    cartpole = diffenvs.make("CartPole", num_poles=3)
    start = cartpole.initial(jax.random.PRNGKey(3))  # a key whose three poles do not overlap
    save("cartpole_initial.png", cartpole, start)
    save("cartpole_swung_up.png", cartpole, optimised_final_state(cartpole, start))

    guidance = diffenvs.make("GuidanceByRepulsion")
    start = guidance.initial(key)
    save("guidance_initial.png", guidance, start)
    zero = jnp.zeros((30, *guidance.action_shape()))
    save("guidance_zero_control_t30.png", guidance, guidance.rollout(start, zero)[0])

    quantum = diffenvs.make("QuantumControl", target_state=3)
    save("quantum_initial.png", quantum, quantum.initial(key))


if __name__ == "__main__":
    main()
