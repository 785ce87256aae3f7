"""The mock's JSON-Schema examples: valid against the schema (checked by `jsonschema`) and, for pydantic
models sent the way openai-python's `.parse()` sends them, accepted by the model itself."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any, Literal

import jsonschema
import pydantic
import pytest
from openai.lib._pydantic import to_strict_json_schema

from adapters.mock.examples import MAX_DEPTH, example


def assert_valid(schema: dict[str, Any]) -> Any:
    value = example(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [error.message for error in validator.iter_errors(value)]
    assert errors == [], f"{value!r}: {errors}"
    return value


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(pydantic.BaseModel):
    street: str
    city: str = pydantic.Field(min_length=12)
    postcode: str | None


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=3)
    age: int = pydantic.Field(ge=18, le=30)
    height_m: float = pydantic.Field(gt=1.5, lt=2.5)
    favourite: Colour
    kind: Literal["human", "robot"]
    home: Address
    previous: list[Address]
    tags: list[str] = pydantic.Field(min_length=2)
    born: datetime.date
    seen: datetime.datetime
    id: uuid.UUID
    pet: Cat | Dog


class Cat(pydantic.BaseModel):
    species: Literal["cat"]
    lives: int


class Dog(pydantic.BaseModel):
    species: Literal["dog"]
    good: bool


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree]
    parent: Tree | None


Person.model_rebuild()


@pytest.mark.parametrize("model", [Person, Address, Tree], ids=lambda m: m.__name__)
def test_pydantic_models_as_parse_sends_them(model: type[pydantic.BaseModel]) -> None:
    schema = to_strict_json_schema(model)
    value = assert_valid(schema)
    model.model_validate(value)  # raises if the example does not fit the model


def test_pydantic_models_in_their_own_non_strict_schema() -> None:
    schema = Person.model_json_schema()
    assert "$defs" in schema
    Person.model_validate(assert_valid(schema))


def test_references_are_followed() -> None:
    schema = {
        "type": "object",
        "properties": {"inner": {"$ref": "#/$defs/Inner"}, "old": {"$ref": "#/definitions/Old"}},
        "required": ["inner", "old"],
        "$defs": {"Inner": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        "definitions": {"Old": {"enum": ["a", "b"]}},
    }
    assert assert_valid(schema) == {"inner": {"n": 1}, "old": "a"}


def test_a_recursive_schema_ends() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                "required": ["next"],
            }
        },
    }
    value = assert_valid(schema)
    depth = 0
    while value is not None:
        value, depth = value["next"], depth + 1
    assert depth == MAX_DEPTH


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 7}]}, id="anyOf-null-first"),
        pytest.param({"oneOf": [{"type": "string", "const": "x"}, {"type": "integer"}]}, id="oneOf"),
        pytest.param(
            {
                "allOf": [{"$ref": "#/$defs/A"}, {"required": ["b"]}],
                "$defs": {
                    "A": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
                        "required": ["a"],
                    }
                },
            },
            id="allOf",
        ),
        pytest.param({"type": ["null", "number"], "exclusiveMinimum": 1, "maximum": 2}, id="type-list"),
        pytest.param({"type": "integer", "minimum": 3, "multipleOf": 5}, id="multipleOf"),
        pytest.param({"type": "integer", "exclusiveMaximum": -4}, id="negative"),
        pytest.param(
            {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
            id="unique-items",
        ),
        pytest.param(
            {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
            id="tuple",
        ),
        pytest.param({"type": "array", "maxItems": 0}, id="empty-array"),
        pytest.param(
            {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
            id="min-properties",
        ),
        pytest.param({"type": "string", "format": "email"}, id="email"),
        pytest.param({"type": "string", "format": "date-time"}, id="date-time"),
        pytest.param({"type": "string", "minLength": 20, "maxLength": 25}, id="string-lengths"),
        pytest.param({"properties": {"x": {"type": "boolean"}}}, id="object-without-type"),
        pytest.param({}, id="anything"),
    ],
)
def test_schema_keywords_are_honoured(schema: dict[str, Any]) -> None:
    assert_valid(schema)


def test_required_properties_only_when_required_is_given() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    assert example(schema) == {"a": "example", "b": "example"}
    assert example({**schema, "required": ["b"]}) == {"b": "example"}
