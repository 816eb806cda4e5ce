"""Pieces the document's processors and the views' docs share."""

from __future__ import annotations

import re
from typing import Any

# The operations of a path item (its other keys are `parameters`, `summary`, ...).
METHODS = frozenset({"get", "put", "post", "patch", "delete"})
# A variable of a werkzeug rule, `<name>` or `<converter:name>`; group 1 is its name.
RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def string_header(description: str, **schema: Any) -> dict[str, Any]:
    """An OpenAPI header object of a string value, for a view's `doc(responses=...)`."""
    return {"description": description, "schema": {"type": "string", **schema}}
