"""Schemathesis hooks for src/tests/openapi.rs (docs/openapi.yaml against a real `tqx serve`).

Each hook changes only what a run needs to stay short or what JSON Schema cannot say; each says why.
"""

import schemathesis
from hypothesis.internal import lambda_sources

# Hypothesis describes a filter's lambda (for its own messages) by parsing the lambda's module,
# and CPython 3.11's `ast.parse` fails ("AST constructor recursion depth mismatch", CPython
# issue 106905) when called deep in the stack, as it is in the coverage phase's walk of a
# batch's schema: the run would end on that error. A lambda that cannot be described is then
# described as unknown instead, which is what hypothesis does when it cannot find the source.
_describe_lambda = lambda_sources.lambda_description


def _describe_lambda_or_unknown(f):
    try:
        return _describe_lambda(f)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources.lambda_description = _describe_lambda_or_unknown

# The longest a long poll is held in a run: a dequeue of an existing, empty queue with
# `wait_ms` up to 60,000 would hold a worker for a minute.
WAIT_MS_MAX_IN_TESTS = 20


def _integers_as_integers(value):
    """`2.0` -> `2`, everywhere in a JSON body.

    JSON Schema counts `2.0` as an integer, and schemathesis sends whole numbers that way on
    purpose; the server reads integer members only when they are written as integers (`2`), as
    docs/http-api.md says (serde's typed parsing; `2.0` is a 400 naming the member). The spec
    cannot state that, so the run sends integers as integers.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integers_as_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: _integers_as_integers(item) for key, item in value.items()}
    return value


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    body = case.body
    if not isinstance(body, (dict, list)):
        return
    body = _integers_as_integers(body)
    if case.operation.path == "/v1/dequeue" and isinstance(body, dict):
        wait_ms = body.get("wait_ms")
        if isinstance(wait_ms, int) and not isinstance(wait_ms, bool) and 0 < wait_ms <= 60000:
            body["wait_ms"] = min(wait_ms, WAIT_MS_MAX_IN_TESTS)
    case.body = body
