"""Checking events against the JSON Schemas in `schemas/events/` (one per type, each built on
`cloudevent.json`), as a consumer in any language would."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "events"


def _load() -> tuple[Registry, dict[str, dict]]:
    documents = {path.stem: json.loads(path.read_text()) for path in SCHEMAS.glob("*.json")}
    registry = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents.values())
    return registry, documents


REGISTRY, DOCUMENTS = _load()


def validate(event: dict) -> None:
    """Raise unless `event` is valid against the schema of its type (which must exist)."""
    schema = DOCUMENTS[event["type"]]
    jsonschema.Draft202012Validator(schema, registry=REGISTRY,
                                    format_checker=jsonschema.FormatChecker()).validate(event)
    datetime.fromisoformat(event["time"])
