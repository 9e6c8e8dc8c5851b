"""The documented schema is the generated one, and every report round-trips through it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nodereach.diagnose.advice import CAUSES
from nodereach.diagnose.model import SCHEMA, json_schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "check-schema.md"


def test_documented_schema_is_current() -> None:
    text = DOC.read_text()
    block = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert block, "docs/check-schema.md lost its JSON Schema block"
    assert json.loads(block.group(1)) == json_schema(), "regenerate docs/check-schema.md from json_schema()"
    assert SCHEMA in text
    for code in CAUSES:
        assert f"`{code}`" in text
