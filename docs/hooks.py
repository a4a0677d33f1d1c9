"""MkDocs hook for the API reference: the docstrings use reST roles (:class:`X`, :func:`f`, ...), which
Markdown renders as the role's name followed by the code span. Keep the code span, drop the role (and
the leading ``~`` of a ``:class:`~package.Name``` target, which Sphinx uses to show the short name)."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):<code>~?")


def on_page_content(html: str, **kwargs: object) -> str:
    """Remove reST role prefixes in front of code spans of the rendered page."""
    return _ROLE.sub("<code>", html)
