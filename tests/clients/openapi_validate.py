"""Validates buddy's OpenAPI document with a real OpenAPI 3.1 validator.

Usage: python openapi_validate.py URL
"""
import json
import sys
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator, validate

with urllib.request.urlopen(sys.argv[1]) as response:
    document = json.load(response)
assert document["openapi"].startswith("3.1"), document["openapi"]
validate(document, cls=OpenAPIV31SpecValidator)
print("ok", len(document["paths"]), "paths")
