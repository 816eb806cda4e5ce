"""A 404 on a resource's path names the resource ("task not found"), whatever the id looks like.

`/task/abc`, `/task/-1` or `/task/1.5` match no rule (the id converters take unsigned integers
or UUIDs), so routing answers them with werkzeug's generic text; an id past the columns' range
matches the rule but cannot exist. Both say what `/task/424242` says: a client cannot tell a
malformed id from one that is not there, and needs no other wording for it.
"""

from __future__ import annotations

from flask import Flask, current_app
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from app.api.openapi_parts import RULE_VARIABLE
from app.services.accounts import USER_NOT_FOUND
from app.services.jobs import JOB_NOT_FOUND
from app.services.task_logs import LOG_ENTRY_NOT_FOUND
from app.services.tasks import TASK_NOT_FOUND

# Per path parameter: what its resource's 404 says (the services' own words).
NOT_FOUND_BY_PARAMETER = {
    "task_id": TASK_NOT_FOUND,
    "log_id": LOG_ENTRY_NOT_FOUND,
    "user_id": USER_NOT_FOUND,
    "job_id": JOB_NOT_FOUND,
}
_EXTENSION = "resource_paths"


def not_found_message(parameter: str) -> str | None:
    return NOT_FOUND_BY_PARAMETER.get(parameter)


def _resource_paths(app: Flask) -> Map:
    """The app's rules that take a resource id, with any path segment accepted as the id."""
    paths: Map | None = app.extensions.get(_EXTENSION)
    if paths is None:
        rules = [
            Rule(RULE_VARIABLE.sub(r"<\1>", rule.rule), endpoint=rule.endpoint)
            for rule in app.url_map.iter_rules()
            if rule.arguments & NOT_FOUND_BY_PARAMETER.keys()
        ]
        paths = app.extensions[_EXTENSION] = Map(rules, strict_slashes=False)
    return paths


def resource_not_found(path: str) -> str | None:
    """The 404 text for `path` when it is a resource's path with an id that matched no rule."""
    try:
        _endpoint, arguments = _resource_paths(current_app).bind("").match(path, method="GET")
    except HTTPException:  # no resource's path (NotFound), or a redirect
        return None
    for name in arguments:
        message = not_found_message(name)
        if message is not None:
            return message
    return None
