"""Dependency-free RGB frames of the three problems (numpy only).

Every function returns an ``(height, width, 3)`` ``np.uint8`` frame, draws the same pixels for the
same input, never raises on finite input of the right shape, and raises ``ValueError`` naming the
parameter otherwise. Pixel (row, column) = (y down, x right); pixel centres sit at integer coordinates.
"""

from __future__ import annotations

import numpy as np

Color = tuple[int, int, int]
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)
POLE_COLORS: tuple[Color, ...] = ((204, 153, 102), (31, 119, 180), (44, 160, 44), (214, 39, 40),
                                  (148, 103, 189), (255, 127, 14), (227, 119, 194), (23, 190, 207))
CART_COLOR, HINGE_COLOR = (60, 60, 60), (129, 132, 203)
DRIVER_COLOR, EVADER_COLOR, TARGET_COLOR = (214, 39, 40), (31, 119, 180), (44, 160, 44)
PSI_FILL, PSI_LINE, TARGET_LINE = (170, 200, 240), (31, 90, 180), (230, 120, 20)


# ----------------------------------------------------------------------------------- validation
def _size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}")
    return int(value)


def _positive(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _array(name: str, value: object, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim or not (np.issubdtype(array.dtype, np.integer)
                                  or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a real {ndim}-d array, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(array.size - np.isfinite(array).sum())
        raise ValueError(f"{name} must contain only finite values, got {bad} non-finite entries "
                         f"(shape {array.shape})")
    return array


# ------------------------------------------------------------------------------------ drawing
def _canvas(height: int, width: int, color: Color) -> np.ndarray:
    return np.tile(np.asarray(color, np.uint8), (height, width, 1))


def _box(image: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray | None:
    """Row and column index grids of the pixels in [x0, x1] x [y0, y1], or None if none are visible."""
    height, width = image.shape[:2]
    if np.any(np.isnan([x0, x1, y0, y1])):
        return None
    c0 = max(int(np.ceil(np.clip(x0, -1, width))), 0)
    c1 = min(int(np.floor(np.clip(x1, -1, width))), width - 1)
    r0 = max(int(np.ceil(np.clip(y0, -1, height))), 0)
    r1 = min(int(np.floor(np.clip(y1, -1, height))), height - 1)
    if c0 > c1 or r0 > r1:
        return None
    return np.mgrid[r0:r1 + 1, c0:c1 + 1]


def _paint(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, mask: np.ndarray, color: Color) -> None:
    image[rows[mask], cols[mask]] = color


def _rect(image: np.ndarray, x0: float, x1: float, y0: float, y1: float, color: Color) -> None:
    """Fill the pixels with x0 <= x <= x1 and y0 <= y <= y1."""
    grid = _box(image, x0, x1, y0, y1)
    if grid is not None:
        image[grid[0], grid[1]] = color


def _circle(image: np.ndarray, cx: float, cy: float, radius: float, color: Color) -> None:
    grid = _box(image, cx - radius, cx + radius, cy - radius, cy + radius)
    if grid is not None:
        rows, cols = grid
        _paint(image, rows, cols, (cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2, color)


def _clip_segment(p0: np.ndarray, p1: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Liang-Barsky: the part of p0 -> p1 inside the box [lo, hi], or None (keeps huge coordinates finite)."""
    with np.errstate(all="ignore"):
        d = p1 - p0
        t0, t1 = 0.0, 1.0
        for k in range(2):
            if d[k] == 0:
                if not lo[k] <= p0[k] <= hi[k]:
                    return None
            else:
                ta, tb = (lo[k] - p0[k]) / d[k], (hi[k] - p0[k]) / d[k]
                t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
        if not t0 <= t1:
            return None
        a, b = p0 + t0 * d, p0 + t1 * d
    return (a, b) if np.all(np.isfinite([a, b])) else None


def _segment(image: np.ndarray, p0, p1, thickness: float, color: Color) -> None:
    """Thick line: every pixel within thickness / 2 of the segment p0 -> p1 ((x, y) pixel coordinates)."""
    r = max(thickness, 1.0) / 2
    height, width = image.shape[:2]
    clipped = _clip_segment(np.asarray(p0, float), np.asarray(p1, float),
                            np.array([-r - 1, -r - 1]), np.array([width + r, height + r]))
    if clipped is None:
        return
    a, b = clipped
    grid = _box(image, min(a[0], b[0]) - r, max(a[0], b[0]) + r, min(a[1], b[1]) - r, max(a[1], b[1]) + r)
    if grid is None:
        return
    rows, cols = grid
    d, length2 = b - a, float(np.dot(b - a, b - a))
    t = np.zeros(rows.shape) if length2 == 0 else \
        np.clip(((cols - a[0]) * d[0] + (rows - a[1]) * d[1]) / length2, 0, 1)
    _paint(image, rows, cols, (cols - a[0] - t * d[0]) ** 2 + (rows - a[1] - t * d[1]) ** 2 <= r * r, color)


def _polyline(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, thickness: float, color: Color) -> None:
    for k in range(max(len(xs) - 1, 0)):
        _segment(image, (xs[k], ys[k]), (xs[k + 1], ys[k + 1]), thickness, color)
    if len(xs) == 1:
        _segment(image, (xs[0], ys[0]), (xs[0], ys[0]), thickness, color)


# ------------------------------------------------------------------------------------- frames
def render_cartpole(physics: np.ndarray, *, width: int = 600, height: int = 400,
                    half_length: float = 0.5) -> np.ndarray:
    """Frame of the multi-pole cart-pole, shape (height, width, 3), uint8.

    ``physics``: shape (1 + P, 2), row 0 = (cart x [m], x velocity [m/s]), rows 1..P = (pole angle θ
    [rad], angular velocity [rad/s]); θ = 0 is upright, θ = π hangs down, any real θ is allowed.
    ``half_length``: half the pole length [m]. All P poles hang from the same hinge on the cart. World
    x = 0 stays at the frame centre while |x| <= 2.4 m; outside that window the view follows the cart.
    """
    width, height = _size("width", width), _size("height", height)
    half_length = _positive("half_length", half_length)
    physics = _array("physics", physics, 2)
    if physics.shape[0] < 1 or physics.shape[1] != 2:
        raise ValueError(f"physics must have shape (1 + num_poles, 2), got {physics.shape}")
    x = physics[0, 0]
    centre = 0.0 if abs(x) <= 2.4 else x
    scale = min(width / 6.0, 0.45 * height / (2 * half_length))  # pixels per metre; 100 by default
    hinge = np.array([width / 2 + (x - centre) * scale, height / 2])
    image = _canvas(height, width, WHITE)
    cart_w, cart_h = 0.5 * scale, 0.3 * scale
    ground = hinge[1] + cart_h / 2
    _rect(image, 0, width, ground, ground + max(1.0, 0.02 * scale), BLACK)
    if abs(centre) < 1e6 and width / scale < 200:  # metre ticks, so that a followed cart visibly moves
        half_view = width / 2 / scale
        for metre in range(int(np.ceil(centre - half_view)), int(np.floor(centre + half_view)) + 1):
            tick = width / 2 + (metre - centre) * scale
            _rect(image, tick - 0.5, tick + 0.5, ground, ground + 0.06 * scale, GREY)
    for limit in (-2.4, 2.4):  # the ±2.4 m marks, where the view starts following the cart
        with np.errstate(over="ignore"):
            mark = width / 2 + (limit - centre) * scale
        _rect(image, mark - 1, mark + 1, ground - 0.1 * scale, ground + 0.15 * scale, GREY)
    _rect(image, hinge[0] - cart_w / 2, hinge[0] + cart_w / 2, hinge[1] - cart_h / 2, hinge[1] + cart_h / 2,
          CART_COLOR)
    for k, theta in enumerate(physics[1:, 0]):
        tip = hinge + 2 * half_length * scale * np.array([np.sin(theta), -np.cos(theta)])
        color = POLE_COLORS[k % len(POLE_COLORS)]
        if k >= len(POLE_COLORS):  # more poles than palette entries: shift the colour, keep it distinct
            color = tuple(int(c + 37 * (k // len(POLE_COLORS))) % 256 for c in color)
        _segment(image, hinge, tip, 0.1 * scale, color)
    _circle(image, hinge[0], hinge[1], 0.04 * scale, HINGE_COLOR)
    return image


def render_guidance(physics: np.ndarray, num_drivers: int, *, width: int = 500, height: int = 500,
                    extent: float = 5.0) -> np.ndarray:
    """Frame of guidance by repulsion, shape (height, width, 3), uint8.

    ``physics``: shape (num_drivers + num_evaders, 2, 2) = (object, [position, velocity],
    [x, y]), drivers first. Shows the square [-extent, extent]² (length units) with y up: a green target at the
    origin, drivers red, evaders blue, and a velocity line per object (0.5 s of motion, at most
    extent / 2 long). Objects outside the square are drawn clamped to its border.
    """
    width, height = _size("width", width), _size("height", height)
    extent = _positive("extent", extent)
    physics = _array("physics", physics, 3)
    if physics.shape[1:] != (2, 2):
        raise ValueError(f"physics must have shape (num_drivers + num_evaders, 2, 2), got {physics.shape}")
    if isinstance(num_drivers, bool) or not isinstance(num_drivers, (int, np.integer)) \
            or not 0 <= num_drivers <= physics.shape[0]:
        raise ValueError(f"num_drivers must be an integer in 0..{physics.shape[0]} (the number of objects "
                         f"in physics), got {num_drivers!r}")
    scale = min(width, height) / (2 * extent)  # pixels per metre
    centre = np.array([width / 2, height / 2])
    radius = max(2.0, min(width, height) / 50)
    image = _canvas(height, width, WHITE)
    ring = max(3.0, 0.3 * scale)
    _circle(image, *centre, ring, TARGET_COLOR)
    _circle(image, *centre, ring - max(1.0, ring / 4), WHITE)
    for axis in ((1, 0), (0, 1)):
        offset = 1.5 * ring * np.array(axis)
        _segment(image, centre - offset, centre + offset, max(1.0, ring / 5), TARGET_COLOR)
    for index in range(physics.shape[0]):
        color = DRIVER_COLOR if index < num_drivers else EVADER_COLOR
        position = np.clip(physics[index, 0], -extent, extent)
        pixel = centre + scale * position * np.array([1.0, -1.0])
        pixel = np.clip(pixel, radius, np.array([width - 1, height - 1]) - radius)
        velocity = physics[index, 1]
        size = np.max(np.abs(velocity))
        if size > 0:  # direction without overflow, length min(0.5 s * |v|, extent / 2)
            unit = velocity / size
            norm = np.hypot(*unit)
            length = extent / 2 if size > extent else min(0.5 * size * norm, extent / 2)
            tip = pixel + scale * length * unit / norm * np.array([1.0, -1.0])
            _segment(image, pixel, tip, max(1.0, radius / 4), tuple(c // 2 for c in color))
        _circle(image, pixel[0], pixel[1], radius, color)
    return image


def render_quantum(physics: np.ndarray, target: np.ndarray, *, width: int = 500,
                   height: int = 300) -> np.ndarray:
    """Frame of the quantum control problem, shape (height, width, 3), uint8.

    ``physics``: shape (Nx, 2) = real and imaginary parts of ψ on the Nx interior grid points;
    ``target``: shape (Nx,), the real target eigenstate. Draws |ψ|² as a filled blue area and
    |target|² as an orange line against the grid index; the vertical scale fits the larger maximum.
    """
    width, height = _size("width", width), _size("height", height)
    physics, target = _array("physics", physics, 2), _array("target", target, 1)
    if physics.shape[0] < 1 or physics.shape[1] != 2:
        raise ValueError(f"physics must have shape (Nx, 2) with Nx >= 1, got {physics.shape}")
    if target.shape != physics.shape[:1]:
        raise ValueError(f"target must have shape (Nx,) = {physics.shape[:1]} to match physics, "
                         f"got {target.shape}")
    peak = max(np.max(np.abs(physics)), np.max(np.abs(target)))
    if peak > 0:  # rescale first: the picture is scale-free and squares of huge values overflow
        physics, target = physics / peak, target / peak
    density, target_density = np.sum(physics**2, axis=1), target**2
    top = max(np.max(density), np.max(target_density)) * 1.15 or 1.0
    margin_x, margin_y = max(1, width // 25), max(1, height // 15)
    baseline = height - 1 - margin_y
    xs = np.linspace(margin_x, max(margin_x, width - 1 - margin_x), len(density))
    psi_rows, target_rows = baseline - (baseline - margin_y) / top * np.stack([density, target_density])
    image = _canvas(height, width, (248, 248, 245))
    rows, cols = np.mgrid[0:height, 0:width]
    curve = np.interp(cols, xs, psi_rows)
    _paint(image, rows, cols, (rows >= curve) & (rows <= baseline) & (cols >= xs[0]) & (cols <= xs[-1]),
           PSI_FILL)
    _polyline(image, xs, psi_rows, max(1.0, height / 100), PSI_LINE)
    _polyline(image, xs, target_rows, max(1.0, height / 150), TARGET_LINE)
    _rect(image, 0, width, baseline, baseline + max(0.0, height / 300), BLACK)
    return image
