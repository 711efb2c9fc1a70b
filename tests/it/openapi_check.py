"""Validates Mamori's served OpenAPI document with openapi-spec-validator (the OpenAPI 3.1 schema
and its semantic rules). Used by tests/it/operations.rs.

  openapi_check.py URL
Prints "ok" on success; any failure raises.
"""
import json
import sys
import urllib.request

from openapi_spec_validator import validate

with urllib.request.urlopen(sys.argv[1]) as r:
    doc = json.load(r)
assert doc["openapi"].startswith("3.1"), doc["openapi"]
validate(doc)
print("ok")
