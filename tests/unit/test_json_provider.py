"""orjson as Flask's JSON provider: the same bytes as Flask's own provider."""

from __future__ import annotations

import dataclasses
import decimal
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from app.api.json_provider import OrjsonProvider


class Colour(StrEnum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int


VALUES: list[Any] = [
    {"b": 1, "a": [1, 2.5, {"z": None, "y": "text", "x": True}]},
    {"when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "day": date(2024, 1, 2)},
    {"id": uuid.UUID(int=5), "amount": decimal.Decimal("1.50"), "point": Point(3)},
    {"big": 2**70, "colour": Colour.RED},
    {2: "int keys", 1: "sorted as the standard library does"},
    [1, "x", None],
    "plain",
    {"quote": 'say "hi"\n\ttab \\ slash </script>'},
]


@pytest.mark.parametrize("debug", [False, True], ids=["compact", "indented"])
@pytest.mark.parametrize("value", VALUES)
def test_orjson_answers_the_bytes_flask_would(value: Any, debug: bool) -> None:
    app = Flask(__name__)
    app.debug = debug
    with app.app_context():
        standard = DefaultJSONProvider(app).response(value).get_data()
        fast = OrjsonProvider(app).response(value).get_data()
    assert fast == standard


def test_non_ascii_text_is_utf8_rather_than_escaped() -> None:
    app = Flask(__name__)
    with app.app_context():
        body = OrjsonProvider(app).response({"name": "tâche"}).get_data()
    assert body == '{"name":"tâche"}\n'.encode()
