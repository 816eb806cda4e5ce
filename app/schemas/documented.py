"""What a validator checks, stated in the JSON Schema too, so that the document accepts exactly
what the API accepts: a client (or a fuzzer) that follows it is never refused, and one that
does not is.

pydantic documents its constraints, not what a validator function or `strip_whitespace` does.
These annotations add the rest as JSON Schema only; validation is left to the validators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# What pydantic's `strip_whitespace` strips (Python's whitespace but \x1c-\x1f), spelled out:
# `\s` means other sets in other regex engines.
WHITESPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# C0 control characters but tab, newline and carriage return, and DEL (app.schemas.tasks).
CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
NUL = r"\x00"
NO_NUL_PATTERN = rf"^[^{NUL}]*$"


def stripped_text_pattern(excluded: str, max_length: int) -> str:
    """A string of 1 to `max_length` characters, none in the class `excluded`, once surrounding
    whitespace is stripped; as one pattern, since JSON Schema's lengths count the whitespace."""
    edge = f"[^{excluded}{WHITESPACE}]"
    return rf"^[{WHITESPACE}]*{edge}(?:[^{excluded}]{{0,{max_length - 2}}}{edge})?[{WHITESPACE}]*$"


@dataclass(frozen=True)
class JsonSchemaPattern:
    """`Annotated` metadata: the value's JSON Schema gets `pattern`; with `replaces_lengths`,
    its minLength and maxLength go (the pattern states the lengths, after stripping)."""

    pattern: str
    replaces_lengths: bool = False

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        if self.replaces_lengths:
            schema.pop("minLength", None)
            schema.pop("maxLength", None)
        return schema


def _any_case(word: str) -> str:
    return "".join(f"[{letter.upper()}{letter}]" if letter.isalpha() else letter for letter in word)


# Domains email-validator refuses as special-use or reserved (RFC 6761, .arpa, .onion): a
# syntactically valid address at one is refused, so the document excludes them too.
SPECIAL_USE_DOMAIN = (
    r"(^|[.@])(" + "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES) + r")\.?$"
)


@dataclass(frozen=True)
class NotMatching:
    """`Annotated` metadata: the value's JSON Schema excludes strings matching `pattern`."""

    pattern: str

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["not"] = {"pattern": self.pattern}
        return schema


def _strings_without_nul(schema: dict[str, Any]) -> None:
    if schema.get("type") == "string" and "pattern" not in schema and "format" not in schema:
        schema["pattern"] = NO_NUL_PATTERN
    for option in schema.get("anyOf", []):
        _strings_without_nul(option)


def no_nul_in_strings(schema: dict[str, Any]) -> None:
    """A model's plain string fields match no NUL (StrictInput refuses it in every field; fields
    with a pattern of their own exclude it already)."""
    for field in schema.get("properties", {}).values():
        _strings_without_nul(field)


def document_model(schema: dict[str, Any], model: type) -> None:
    """StrictInput's `json_schema_extra`: plain strings exclude NUL, and a model's
    `JSON_SCHEMA_EXTRA` (examples, rules between fields) is added to its schema."""
    no_nul_in_strings(schema)
    schema.update(getattr(model, "JSON_SCHEMA_EXTRA", {}))


def no_default(schema: dict[str, Any]) -> None:
    """A field's `json_schema_extra` for a parameter whose presence means something: its
    default is described, not declared."""
    schema.pop("default", None)


def not_nullable(schema: dict[str, Any]) -> None:
    """A field's `json_schema_extra` for an optional field that cannot be null (a validator
    refuses it): it may be left out, and is then not set; `null` is no value a client can send.
    (Typed `X | None` rather than hiding `None` from the schema: a union of two members would
    name its members, class names, in its error locations.)"""
    schema.pop("default", None)
    options = schema.pop("anyOf", None)
    if options is not None:
        (kept,) = [option for option in options if option != {"type": "null"}]
        schema.update(kept)


def integer_at_most_pattern(maximum: int) -> str:
    """An alternation matching the decimal integers 1..`maximum` (no sign, no leading zero):
    a bound that a string parameter's pattern can state, as `maximum` does for a number."""
    digits = str(maximum)
    length = len(digits)
    options = [f"[1-9][0-9]{{0,{length - 2}}}"] if length > 1 else []
    for position, digit in enumerate(digits):
        low = 1 if position == 0 else 0
        high = int(digit) - 1
        if high >= low:
            rest = length - position - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            options.append(f"{digits[:position]}[{low}-{high}]{tail}")
    options.append(digits)
    return "|".join(options)
