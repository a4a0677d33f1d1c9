"""Import of optional dependencies with a one-line hint naming the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, extra: str) -> ModuleType:
    """``importlib.import_module(module)``, or ImportError naming ``pip install "diffenvs[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f'{module} is not installed ({error}); install it with: '
                          f'pip install "diffenvs[{extra}]"') from None
