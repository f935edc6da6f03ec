"""Drives buddy's OpenAI-compatible facade with the real `openai` client library.

Usage: python openai_client.py BASE_URL MODEL EXPECTED_TEXT
Exits non-zero (with the failed assertion) when the facade does not behave.
"""
import sys

import openai

base, model, expected = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)

ids = [m.id for m in client.models.list()]
assert model in ids, ids

plain = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello"}]
)
assert plain.choices[0].message.content == expected, plain
assert plain.choices[0].finish_reason == "stop", plain

parts = []
finish = None
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello"}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert "".join(parts) == expected, parts
assert finish == "stop", finish

try:
    client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "x"}]
    )
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as error:
    assert "no-such-model" in str(error), error

print("ok", len(parts), "chunks")
