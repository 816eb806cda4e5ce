"""Task bodies encoded from column values by orjson alone, without building the output model:
for the answers app.api.hot_paths computes on a cache miss (`GET /tasks`, its `?date=` view,
`GET /task/<id>`), whose values are read on the driver's cursor with their columns' types.

The output models (TaskOut, TaskListItem, TaskPage) only pick their fields from such values and
turn them into JSON types: in pydantic's JSON mode a datetime becomes ISO 8601 with `Z` for UTC,
a date ISO 8601, an enum its value; integers, strings and None stay. orjson writes those types
the same way (OPT_UTC_Z), and the strings are orjson's either way (the model's dump goes through
the app's orjson provider), so the bytes are the model's (tests compare them, per shape, on both
backends). Validating and dumping the model cost a date-view miss about 75 us of its ~600 us in
the process (a page of 20). Anything else (ORM objects, a type orjson does not write) is left to
the model: the functions answer None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from app.schemas.common import PageMeta
from app.schemas.tasks import LogSnapshot, TaskListItem, TaskOut

# Sorted keys, as the app's JSON provider writes every answer.
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
_TASK_KEYS = tuple(TaskOut.model_fields)
_SNAPSHOT_KEYS = tuple(LogSnapshot.model_fields)
_PAGE_KEYS = tuple(PageMeta.model_fields)
_LOG_KEY = "log"  # TaskListItem's one field beyond TaskOut's
assert set(TaskListItem.model_fields) == {*_TASK_KEYS, _LOG_KEY}


def task_json(fields: Mapping[str, Any]) -> orjson.Fragment | None:
    """TaskOut's JSON of a task's column values (extra columns, e.g. `version`, are left out)."""
    return _encoded({key: fields[key] for key in _TASK_KEYS})


def task_page_json(body: Mapping[str, Any]) -> orjson.Fragment | None:
    """TaskPage's JSON of a page body (app.api.pagination.page_body) whose items are column
    values, each with its snapshot's fields under `log` in the date view (else no `log`: null);
    None if an item or snapshot is an object instead (the model reads its attributes)."""
    items = []
    for item in body["items"]:
        snapshot = item.get(_LOG_KEY) if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(snapshot, dict | None):
            return None
        out = {key: item[key] for key in _TASK_KEYS}
        out[_LOG_KEY] = None if snapshot is None else {k: snapshot[k] for k in _SNAPSHOT_KEYS}
        items.append(out)
    return _encoded({**{key: body[key] for key in _PAGE_KEYS}, "items": items})


def _encoded(value: dict[str, Any]) -> orjson.Fragment | None:
    try:
        return orjson.Fragment(orjson.dumps(value, option=_OPTIONS))
    except orjson.JSONEncodeError:  # e.g. a type orjson does not write: the model does
        return None
