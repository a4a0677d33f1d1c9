"""Shared fixtures: JAX precision modes and fast compilation for compile-dominated test modules."""

from __future__ import annotations

from typing import Any, Iterator

import jax
import pytest


def _with_jax_setting(name: str, value: Any) -> Iterator[None]:
    """Set a JAX config option for the fixture's scope and restore the previous value afterwards."""
    previous = jax.config.values[name]
    jax.config.update(name, value)
    try:
        yield
    finally:
        jax.config.update(name, previous)


@pytest.fixture
def x64() -> Iterator[None]:
    """Run the test with float64 enabled (JAX x64 mode)."""
    yield from _with_jax_setting("jax_enable_x64", True)


@pytest.fixture(scope="module")
def x64_module() -> Iterator[None]:
    """float64 for a whole module (for module-scoped fixtures that compile once in float64)."""
    yield from _with_jax_setting("jax_enable_x64", True)


@pytest.fixture
def x32() -> Iterator[None]:
    """Run the test in JAX's default float32 mode, whatever the session's setting."""
    yield from _with_jax_setting("jax_enable_x64", False)


@pytest.fixture(scope="module")
def fast_compilation() -> Iterator[None]:
    """Compile with most XLA optimisations off (for modules dominated by compilation); use with
    ``pytestmark = pytest.mark.usefixtures("fast_compilation")``."""
    yield from _with_jax_setting("jax_disable_most_optimizations", True)
