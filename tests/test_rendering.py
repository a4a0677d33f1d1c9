"""The numpy rasteriser: frame shapes, what is drawn where, determinism and input validation."""

import warnings

import numpy as np
import pytest

from diffenvs import rendering
from diffenvs.rendering import render_cartpole, render_guidance, render_quantum

N = 32
GRID = np.arange(1, N + 1)


def eigen(k):
    return np.sqrt(2 / (N + 1)) * np.sin(np.pi * k * GRID / (N + 1))


def quantum_physics(psi):
    return np.stack([psi.real, psi.imag], axis=-1)


def cart(x=0.0, *thetas):
    return np.array([[x, 0.0]] + [[theta, 0.0] for theta in thetas])


def guidance_state(*objects):
    """objects: ((px, py), (vx, vy)) each."""
    return np.array(objects, dtype=float)


def is_background(image, row, col):
    return np.array_equal(image[row, col], image[0, 0])


def has_color(image, row, col, color, radius=3):
    patch = image[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1]
    return bool(np.any(np.all(patch == np.array(color, np.uint8), axis=-1)))


FRAMES = {
    "cartpole": lambda **size: render_cartpole(cart(0.3, 0.2, 2.0), **size),
    "guidance": lambda **size: render_guidance(guidance_state(((1, 2), (1, 0)), ((-3, 1), (0, 1))), 1,
                                               **size),
    "quantum": lambda **size: render_quantum(quantum_physics(0.6 * eigen(1) + 0.8j * eigen(2)), eigen(3),
                                             **size),
}
SIZES = [{}, {"width": 1, "height": 1}, {"width": 7, "height": 3}, {"width": 64, "height": 200}]


@pytest.mark.parametrize("name", FRAMES)
@pytest.mark.parametrize("size", SIZES)
def test_shape_dtype_and_determinism(name, size):
    image = FRAMES[name](**size)
    default = {"cartpole": (400, 600), "guidance": (500, 500), "quantum": (300, 500)}[name]
    expected = (size.get("height", default[0]), size.get("width", default[1]), 3)
    assert image.shape == expected and image.dtype == np.uint8
    assert np.array_equal(image, FRAMES[name](**size))
    if not size:  # something besides the background is drawn
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 3


def test_cartpole_pole_direction_follows_theta():
    # default frame: hinge at (col 300, row 200), 100 px per metre, pole 1 m long
    for theta, up in [(0.0, True), (np.pi, False), (2 * np.pi, True), (-3 * np.pi, False), (0.05, True)]:
        image = render_cartpole(cart(0.0, theta))
        assert is_background(image, 120, 300) != up, theta
        assert is_background(image, 280, 300) == up, theta


def test_cartpole_poles_share_hinge_and_have_distinct_colors():
    image = render_cartpole(cart(0.0, -np.pi / 2, np.pi / 2))  # pole 1 points left, pole 2 right
    left, right = image[200, 300 - 80], image[200, 300 + 80]
    assert not is_background(image, 200, 220) and not is_background(image, 200, 380)
    assert not np.array_equal(left, right)
    many = render_cartpole(cart(0.0, *np.linspace(-3.0, 3.0, 12)))  # more poles than palette entries
    assert many.shape == (400, 600, 3)


def test_cartpole_cart_position_and_following_view():
    cart_pixel = (210, 315)  # inside the cart (50 x 30 px centred at the hinge), off the hinge dot
    centred = render_cartpole(cart(0.0))
    moved = render_cartpole(cart(1.0))
    assert not np.array_equal(centred, moved)
    assert np.array_equal(moved[cart_pixel[0], cart_pixel[1] + 100], centred[cart_pixel])
    assert is_background(moved, *cart_pixel)
    followed = render_cartpole(cart(7.0, 0.0))  # outside the ±2.4 m window: the cart stays in view
    assert np.array_equal(followed[cart_pixel], centred[cart_pixel])
    assert not is_background(followed, 120, 300)


def test_guidance_objects_drawn_where_expected():
    # 500 x 500, extent 5: 50 px per metre, origin at (250, 250), y up
    state = guidance_state(((1.0, 2.0), (0.0, 0.0)), ((-2.0, -1.0), (0.0, 0.0)), ((40.0, 0.0), (0.0, 0.0)),
                           ((-1e3, -1e3), (0.0, 0.0)))
    image = render_guidance(state, num_drivers=1)
    assert has_color(image, 150, 300, rendering.DRIVER_COLOR)
    assert not has_color(image, 350, 300, rendering.DRIVER_COLOR)  # not mirrored in y
    assert has_color(image, 300, 150, rendering.EVADER_COLOR)
    # outside the square: clamped so that the whole 10 px disc stays inside the frame
    assert has_color(image, 250, 489, rendering.EVADER_COLOR, radius=0)  # (40, 0) m: right border
    assert has_color(image, 489, 10, rendering.EVADER_COLOR, radius=0)  # (-1000, -1000) m: bottom-left
    assert has_color(image, 250, 250, rendering.TARGET_COLOR, radius=20)
    swapped = render_guidance(state, num_drivers=2)
    assert has_color(swapped, 300, 150, rendering.DRIVER_COLOR)


def test_guidance_velocity_line_changes_frame():
    still = render_guidance(guidance_state(((1.0, 2.0), (0.0, 0.0))), 1)
    moving = render_guidance(guidance_state(((1.0, 2.0), (2.0, 0.0))), 1)
    assert not np.array_equal(still, moving)
    assert is_background(still, 150, 335) and not is_background(moving, 150, 335)  # 0.5 s * 2 m/s = 50 px


def test_quantum_frame_changes_with_psi_and_target():
    ground = render_quantum(quantum_physics(eigen(1).astype(complex)), eigen(3))
    excited = render_quantum(quantum_physics(1j * eigen(2)), eigen(3))
    other_target = render_quantum(quantum_physics(eigen(1).astype(complex)), eigen(2))
    assert not np.array_equal(ground, excited)
    assert not np.array_equal(ground, other_target)
    # |φ_1|² peaks in the middle, |φ_2|² vanishes there: a pixel just above the baseline is filled for one
    column, row = 250, 300 - 1 - 20 - 5
    assert not np.array_equal(ground[row, column], excited[row, column])


def test_extreme_finite_inputs_neither_raise_nor_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frame in [
            render_cartpole(cart(1e300, 1e300, -1e300)),
            render_cartpole(cart(-1e308, 0.0), half_length=1e300),
            render_cartpole(cart(0.0, 0.0), half_length=1e-300),
            render_guidance(guidance_state(((1e308, -1e308), (1e308, -1e308)), ((0, 0), (1e-300, 0))), 1),
            render_guidance(np.zeros((0, 2, 2)), 0),
            render_quantum(np.zeros((N, 2)), np.zeros(N)),
            render_quantum(np.full((N, 2), 1e300), np.full(N, -1e300)),
            render_quantum(np.ones((1, 2)), np.ones(1)),
            render_cartpole(np.zeros((1, 2))),
        ]:
            assert frame.dtype == np.uint8


@pytest.mark.parametrize("call, match", [
    (lambda: render_cartpole(cart(0.0, 0.0), width=0), r"width.*0"),
    (lambda: render_cartpole(cart(0.0, 0.0), height=-5), r"height.*-5"),
    (lambda: render_guidance(np.zeros((2, 2, 2)), 1, width=10.5), r"width.*10\.5"),
    (lambda: render_quantum(np.zeros((N, 2)), eigen(1), height=True), r"height"),
    (lambda: render_cartpole(cart(0.0, 0.0), half_length=0.0), r"half_length.*> 0"),
    (lambda: render_cartpole(np.zeros((2, 3))), r"physics.*\(2, 3\)"),
    (lambda: render_cartpole(np.zeros(4)), r"physics.*\(4,\)"),
    (lambda: render_cartpole(cart(np.nan, 0.0)), r"physics.*finite"),
    (lambda: render_cartpole(np.array([["a", "b"]])), r"physics"),
    (lambda: render_guidance(np.zeros((3, 2, 3)), 1), r"physics.*\(3, 2, 3\)"),
    (lambda: render_guidance(np.zeros((3, 2, 2)), 4), r"num_drivers.*0\.\.3.*4"),
    (lambda: render_guidance(np.zeros((3, 2, 2)), -1), r"num_drivers.*-1"),
    (lambda: render_guidance(np.zeros((3, 2, 2)), 1.0), r"num_drivers"),
    (lambda: render_guidance(np.full((3, 2, 2), np.inf), 1), r"physics.*finite"),
    (lambda: render_guidance(np.zeros((3, 2, 2)), 1, extent=np.inf), r"extent"),
    (lambda: render_quantum(np.zeros((N, 3)), eigen(1)), r"physics.*\(32, 3\)"),
    (lambda: render_quantum(np.zeros((0, 2)), np.zeros(0)), r"physics.*\(0, 2\)"),
    (lambda: render_quantum(np.zeros((N, 2)), eigen(1)[:-1]), r"target.*\(31,\)"),
    (lambda: render_quantum(np.zeros((N, 2)), eigen(1) * np.nan), r"target.*finite"),
    (lambda: render_quantum(np.zeros((N, 2)), eigen(1) + 0j), r"target.*real"),
])
def test_bad_inputs_raise_value_error_naming_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()
