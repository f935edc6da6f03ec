#!/usr/bin/env bash
# The Python client libraries the server tests drive buddy-server with: the `openai`
# package (the OpenAI-compatible facade) and `openapi-spec-validator` (the OpenAPI 3.1
# document), from PyPI, in a venv of their own. Prints the venv's python on stdout.
#
#   scripts/py-clients.sh          # creates or reuses ~/.cache/buddy-py-clients/venv
#
# Environment: PY_CLIENTS_HOME (default ~/.cache/buddy-py-clients), PYTHON (default python3).
set -euo pipefail
home=${PY_CLIENTS_HOME:-$HOME/.cache/buddy-py-clients}
venv=$home/venv
py=$venv/bin/python
want=("openai>=1,<4" "openapi-spec-validator>=0.7,<1")
if ! "$py" -c "import openai, openapi_spec_validator" >/dev/null 2>&1; then
    mkdir -p "$home"
    "${PYTHON:-python3}" -m venv "$venv" >&2
    "$py" -m pip install -q --disable-pip-version-check "${want[@]}" >&2
fi
"$py" -c "import openai, openapi_spec_validator" >&2
echo "$py"
