"""PacSpace's official Python SDK against examples/recipes/agent_safe_writes.rs.

Usage: python3 pacspace_client.py BASE_URL SCENARIO; prints one JSON object with what the SDK
returned or raised. tests/sdk_clients.rs runs it and checks the result and the server's counts.
"""

import json
import sys
import threading
import time
import uuid

from pacspace_sdk import PacSpace
from pacspace_sdk.errors import PacSpaceError

API_KEY = "pk_live_demo"


def client(base_url):
    # The SDK's defaults: 2 retries of 408, 429 and 5xx answers and of network errors.
    return PacSpace(API_KEY, base_url=base_url)


def emit(pac, reference_id, delta=-1, headers=None):
    options = {"referenceId": reference_id, "idempotencyKey": "live:" + reference_id}
    if headers:
        options["headers"] = headers
    return pac.balance.emit("cus_1", delta, "api-call", options)


def raised(error):
    return {"error": type(error).__name__, "status": error.status_code, "code": error.code}


def new_reference():
    return "acme:emit:2024-06:" + str(uuid.uuid4())


def emit_once(base_url):
    """The proxy drops the first answer: the SDK retries with the same key."""
    return emit(client(base_url), new_reference())


def conflict(base_url):
    """The same key with another delta: 409 IDEMPOTENCY_CONFLICT, raised without a retry."""
    pac, reference_id = client(base_url), new_reference()
    first = emit(pac, reference_id)
    try:
        emit(pac, reference_id, delta=-5)
    except PacSpaceError as error:
        return {"first": first, "second": raised(error)}
    return {"first": first, "second": "no error"}


def pending(base_url):
    """A duplicate sent while the first runs gets IDEMPOTENCY_PENDING back from the SDK; the
    agent waits retryAfterSeconds and calls again with the same key until it gets the delta."""
    pac, reference_id = client(base_url), new_reference()
    results = {}

    def slow_emit():
        results["first"] = emit(pac, reference_id, headers={"X-Demo-Delay-Ms": "2500"})

    first = threading.Thread(target=slow_emit)
    first.start()
    time.sleep(1.0)
    answers = [emit(pac, reference_id)]
    while answers[-1].get("code") == "IDEMPOTENCY_PENDING" and len(answers) < 10:
        time.sleep(answers[-1]["retryAfterSeconds"])
        answers.append(emit(pac, reference_id))
    first.join()
    results["duplicate"] = answers
    return results


def unknown_key(base_url):
    try:
        emit(PacSpace("sk_other", base_url=base_url), new_reference())
    except PacSpaceError as error:
        return raised(error)
    return "no error"


SCENARIOS = {
    "emit": emit_once,
    "conflict": conflict,
    "pending": pending,
    "unknown_key": unknown_key,
}

if __name__ == "__main__":
    base_url, scenario = sys.argv[1], sys.argv[2]
    print(json.dumps(SCENARIOS[scenario](base_url)))
