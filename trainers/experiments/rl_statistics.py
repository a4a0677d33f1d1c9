"""Few-seed statistics with rliable (Agarwal et al., NeurIPS 2021): interquartile means with stratified
bootstrap intervals and the probability of improvement.

Scores follow rliable's convention: higher is better, one array of shape (runs, tasks) per method (a
task is a stratum of the bootstrap: runs are resampled within each task). The RL study scores a run
by its normalised loss reduction, ``1 - loss / reference_loss`` (1 = zero loss, 0 = no better than the
reference controller, negative = worse).

rliable is an optional dependency (``pip install "diffenvs[stats]"``).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

CONFIDENCE = 0.95
REPETITIONS = 2_000
"""Bootstrap resamples per interval (the number in rliable's examples; its default of 50 000 takes
minutes per interval on a 2-core CPU)."""


class Estimate(NamedTuple):
    """A point estimate and its 95 % stratified-bootstrap interval."""

    value: float
    low: float
    high: float

    def separated_from(self, other: "Estimate") -> bool:
        """Whether the two intervals do not overlap."""
        return self.low > other.high or other.low > self.high


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as error:
        raise ImportError(f"the RL statistics need rliable: pip install \"diffenvs[stats]\" ({error})") from None
    return library, metrics


def _check(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for method, values in scores.items():
        values = np.asarray(values, float)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[0] < 1:
            raise ValueError(f"scores[{method!r}] must have shape (runs, tasks), got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"scores[{method!r}] must be finite, got {values.tolist()}")
        checked[method] = values
    return checked


def iqm_intervals(scores: Mapping[str, np.ndarray], *, seed: int = 0,
                  repetitions: int = REPETITIONS) -> dict[str, Estimate]:
    """The interquartile mean over all runs and tasks of each method, with its 95 % stratified-bootstrap
    interval. ``scores[method]`` has shape (runs, tasks) or (runs,)."""
    library, metrics = _rliable()
    scores = _check(scores)
    np.random.seed(seed)                     # rliable draws its resamples from numpy's global generator
    points, intervals = library.get_interval_estimates(
        scores, lambda values: np.array([metrics.aggregate_iqm(values)]), reps=repetitions,
        confidence_interval_size=CONFIDENCE)
    return {method: Estimate(float(points[method][0]), float(intervals[method][0, 0]),
                             float(intervals[method][1, 0])) for method in scores}


def probability_of_improvement(scores: Mapping[str, np.ndarray], method: str, *, seed: int = 0,
                               repetitions: int = REPETITIONS) -> dict[str, Estimate]:
    """P(``method`` scores higher than each other method on a random run of a random task), the
    Mann-Whitney statistic averaged over tasks, with its 95 % stratified-bootstrap interval."""
    library, metrics = _rliable()
    scores = _check(scores)
    if method not in scores:
        raise ValueError(f"method must be one of {sorted(scores)}, got {method!r}")
    pairs = {other: (scores[method], scores[other]) for other in scores if other != method}
    np.random.seed(seed)
    points, intervals = library.get_interval_estimates(
        pairs, metrics.probability_of_improvement, reps=repetitions, confidence_interval_size=CONFIDENCE)
    return {other: Estimate(float(np.ravel(points[other])[0]), float(np.ravel(intervals[other])[0]),
                            float(np.ravel(intervals[other])[1])) for other in pairs}
