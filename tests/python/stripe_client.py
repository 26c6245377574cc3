"""Stripe's official Python SDK against examples/recipes/stripe_compatible.rs.

Usage: python3 stripe_client.py BASE_URL SCENARIO; prints one JSON object with what the SDK
returned or raised. tests/sdk_clients.rs runs it and checks the result and the server's counts.
"""

import json
import sys
import threading
import time
import uuid

import stripe


def configure(base_url, retries):
    stripe.api_key = "sk_test_demo"
    stripe.api_base = base_url
    stripe.max_network_retries = retries


def created(customer):
    headers = customer.last_response.headers
    return {
        "id": customer.id,
        "object": customer.object,
        "email": customer.email,
        "replayed": headers.get("Idempotent-Replayed"),
    }


def raised(error):
    return {
        "error": type(error).__name__,
        "http_status": error.http_status,
        "code": error.code,
        "message": error.user_message,
    }


def create(base_url):
    """One create; the tests drop its first answer, or make the store fail once."""
    configure(base_url, retries=2)
    customer = stripe.Customer.create(email="jenny@example.com", idempotency_key=str(uuid.uuid4()))
    return created(customer)


def conflict(base_url):
    """The same key with other parameters: an IdempotencyError, raised without a retry."""
    configure(base_url, retries=2)
    key = str(uuid.uuid4())
    first = stripe.Customer.create(email="jenny@example.com", idempotency_key=key)
    try:
        stripe.Customer.create(email="other@example.com", idempotency_key=key)
    except stripe.StripeError as error:
        return {"first": created(first), "second": raised(error)}
    return {"first": created(first), "second": "no error"}


def in_flight(base_url):
    """A duplicate sent while the first call runs: 409, retried until it gets the object."""
    configure(base_url, retries=5)
    key = str(uuid.uuid4())
    params = {"email": "jenny@example.com", "metadata": {"demo_delay_ms": "2500"}}
    results = {}

    def create_as(name):
        try:
            results[name] = created(stripe.Customer.create(idempotency_key=key, **params))
        except stripe.StripeError as error:
            results[name] = raised(error)

    first = threading.Thread(target=create_as, args=("first",))
    first.start()
    time.sleep(1.0)
    create_as("duplicate")
    first.join()
    return results


def unauthenticated(base_url):
    configure(base_url, retries=2)
    stripe.api_key = "pk_not_a_secret_key"
    try:
        stripe.Customer.create(email="jenny@example.com")
    except stripe.StripeError as error:
        return raised(error)
    return "no error"


SCENARIOS = {
    "create": create,
    "conflict": conflict,
    "in_flight": in_flight,
    "unauthenticated": unauthenticated,
}

if __name__ == "__main__":
    base_url, scenario = sys.argv[1], sys.argv[2]
    print(json.dumps(SCENARIOS[scenario](base_url)))
