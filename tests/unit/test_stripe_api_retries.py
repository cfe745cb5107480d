"""The Stripe client's retries, errors, budget and paging, against the fake Stripe server.

Waits are recorded, never slept: `Stripe(..., sleep=recorder)` and `Budget(clock=, sleep=)`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from snapshots import errors, stripe_api
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

CUSTOMERS = 250
_keys = itertools.count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStripe]:
    with run_fake_stripe(customers=CUSTOMERS) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeStripe) -> Iterator[FakeStripe]:
    server.clear_faults()
    server.clear_requests()
    yield server
    server.clear_faults()


class Recorder:
    """A `sleep` that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(
    fake: FakeStripe,
    sleep: Recorder,
    *,
    secret_key: str | None = None,
    rps: float = 0,  # no budget: only retry waits are recorded
    retries: int = 5,
) -> stripe_api.Stripe:
    return stripe_api.Stripe(
        secret_key=secret_key or fake.secret_key,
        api_base=fake.api_base,
        sleep=sleep,
        rps=rps,
        retries=retries,
    )


def customer_requests(fake: FakeStripe) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["path"].startswith("/v1/customers")]


def read_customers(stripe: stripe_api.Stripe) -> dict[str, Any]:
    return stripe.get("listing customers", "/v1/customers", limit=1)


# -- retries --------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_a_429_with_retry_after_waits_that_long(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=429, headers={"Retry-After": "1"})
    page = read_customers(client(fake, sleep))
    assert page["object"] == "list"
    assert sleep.waits == [1.0]
    assert [r["status"] for r in customer_requests(fake)] == [429, 200]


@pytest.mark.acceptance
def test_a_429_without_retry_after_backs_off_with_jitter(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=429, count=4)
    read_customers(client(fake, sleep))
    assert len(sleep.waits) == 4
    for attempt, wait in enumerate(sleep.waits):
        base = 0.5 * 2**attempt
        assert base / 2 <= wait <= base, (attempt, wait)
    assert [r["status"] for r in customer_requests(fake)] == [429] * 4 + [200]


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (0, 0.25, 0.5),
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
        (5, 8.0, 16.0),
        (6, 15.0, 30.0),
        (20, 15.0, 30.0),
    ],
)
def test_backoff_doubles_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    import stripe

    exc = stripe.RateLimitError("slow down", http_status=429, headers={})
    for _ in range(50):
        delay = stripe_api.retry_delay(exc, attempt)
        assert delay is not None and low <= delay <= high


@pytest.mark.acceptance
def test_a_500_is_retried_then_succeeds(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=500, count=2)
    page = read_customers(client(fake, sleep))
    assert page["data"]
    assert len(sleep.waits) == 2
    assert [r["status"] for r in customer_requests(fake)] == [500, 500, 200]


@pytest.mark.acceptance
def test_stripe_should_retry_false_stops_a_500(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=500, count=3, headers={"Stripe-Should-Retry": "false"})
    with pytest.raises(errors.StripeUnavailable) as caught:
        read_customers(client(fake, sleep))
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1
    assert "HTTP 500" in str(caught.value)
    assert "attempts" not in str(caught.value)


@pytest.mark.acceptance
def test_stripe_should_retry_true_retries_a_400(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=400, headers={"Stripe-Should-Retry": "true"})
    assert read_customers(client(fake, sleep))["data"]
    assert len(sleep.waits) == 1
    assert [r["status"] for r in customer_requests(fake)] == [400, 200]


@pytest.mark.acceptance
def test_a_plain_400_is_not_retried(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=400)
    with pytest.raises(errors.StripeError) as caught:
        read_customers(client(fake, sleep))
    assert type(caught.value) is errors.StripeError
    assert "Stripe said no while listing customers" in str(caught.value)
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1


@pytest.mark.acceptance
def test_a_409_is_retried(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=409)
    assert read_customers(client(fake, sleep))["data"]
    assert len(sleep.waits) == 1


@pytest.mark.acceptance
def test_a_403_is_never_retried(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=403, count=3, headers={"Stripe-Should-Retry": "true"})
    with pytest.raises(errors.StripeError) as caught:
        read_customers(client(fake, sleep))
    assert not isinstance(caught.value, errors.StripeUnavailable | errors.StripeAuthError)
    assert "read access" in str(caught.value)
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1


@pytest.mark.acceptance
@pytest.mark.parametrize("retries", [0, 1, 3])
def test_retries_exhausted_say_how_many_attempts(fake: FakeStripe, retries: int) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=503, count=None)
    with pytest.raises(errors.StripeUnavailable) as caught:
        read_customers(client(fake, sleep, retries=retries))
    message = str(caught.value)
    assert "while listing customers" in message
    if retries:
        assert f"(after {retries + 1} attempts)" in message
    else:
        assert "attempts" not in message
    assert len(sleep.waits) == retries
    assert len(customer_requests(fake)) == retries + 1


@pytest.mark.acceptance
def test_rate_limit_exhausted_is_unavailable(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=429, count=None)
    with pytest.raises(errors.StripeUnavailable, match=r"rate limit.*\(after 3 attempts\)"):
        read_customers(client(fake, sleep, retries=2))


@pytest.mark.acceptance
def test_a_dropped_connection_is_retried(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", disconnect=True)
    assert read_customers(client(fake, sleep))["data"]
    assert len(sleep.waits) == 1
    assert [r["status"] for r in customer_requests(fake)] == [0, 200]


@pytest.mark.acceptance
def test_dropped_connections_exhausting_retries_are_unavailable(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", disconnect=True, count=None)
    with pytest.raises(errors.StripeUnavailable) as caught:
        read_customers(client(fake, sleep, retries=2))
    assert "Stripe could not be reached while listing customers (after 3 attempts)" in str(
        caught.value
    )


@pytest.mark.acceptance
def test_a_revoked_key_fails_after_one_request(fake: FakeStripe) -> None:
    sleep = Recorder()
    key = f"sk_test_revoked{next(_keys):04d}"
    fake.revoke(key)
    with pytest.raises(errors.StripeAuthError) as caught:
        read_customers(client(fake, sleep, secret_key=key))
    message = str(caught.value)
    assert "refused the key" in message and "revoked" in message
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1
    assert customer_requests(fake)[0]["status"] == 401


@pytest.mark.acceptance
def test_a_401_with_should_retry_true_is_still_not_retried(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=401, count=3, headers={"Stripe-Should-Retry": "true"})
    with pytest.raises(errors.StripeAuthError):
        read_customers(client(fake, sleep))
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1


@pytest.mark.acceptance
def test_a_404_is_not_found(fake: FakeStripe) -> None:
    sleep = Recorder()
    with pytest.raises(errors.StripeNotFound, match="404") as caught:
        client(fake, sleep).get("reading customer cus_nope", "/v1/customers/cus_nope")
    assert "while reading customer cus_nope" in str(caught.value)
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1


@pytest.mark.acceptance
@pytest.mark.parametrize("after", ["3600", "61"])
def test_a_retry_after_too_long_is_not_waited_for(fake: FakeStripe, after: str) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=429, count=3, headers={"Retry-After": after})
    with pytest.raises(errors.StripeUnavailable, match="rate limit"):
        read_customers(client(fake, sleep))
    assert sleep.waits == []
    assert len(customer_requests(fake)) == 1


@pytest.mark.acceptance
def test_a_retry_after_of_60_seconds_is_waited_for(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=503, headers={"Retry-After": "60"})
    assert read_customers(client(fake, sleep))["data"]
    assert sleep.waits == [60.0]


@pytest.mark.acceptance
def test_an_unreadable_retry_after_falls_back_to_backoff(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault(
        "/v1/customers", status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )
    assert read_customers(client(fake, sleep))["data"]
    assert len(sleep.waits) == 1 and 0.25 <= sleep.waits[0] <= 0.5


# -- the budget -------------------------------------------------------------------------------


class FakeTime:
    """A clock that a recorded sleep moves forward, as a real one would."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("rate", "takes", "expected"),
    [
        # a burst of `rate` goes through free, then each request waits 1/rate
        (10.0, 13, [0.1, 0.1, 0.1]),
        (1.0, 4, [1.0, 1.0, 1.0]),
        (4.0, 6, [0.25, 0.25]),
        # fractional rates: the bucket holds at least one token
        (0.5, 3, [2.0, 2.0]),
        (2.5, 5, [0.2, 0.4, 0.4]),
        # no budget
        (0.0, 500, []),
    ],
)
def test_budget(rate: float, takes: int, expected: list[float]) -> None:
    time_ = FakeTime()
    budget = stripe_api.Budget(rate, clock=time_.clock, sleep=time_.sleep)
    for _ in range(takes):
        budget.take()
    assert time_.waits == pytest.approx(expected)


def test_budget_refills_while_idle() -> None:
    time_ = FakeTime()
    budget = stripe_api.Budget(5.0, clock=time_.clock, sleep=time_.sleep)
    for _ in range(5):
        budget.take()
    time_.now += 1.0  # a second idle: a full bucket again, but never more
    for _ in range(5):
        budget.take()
    assert time_.waits == []
    time_.now += 100.0
    for _ in range(6):
        budget.take()
    assert time_.waits == pytest.approx([0.2])


def test_budget_without_a_moving_clock_queues_the_waits() -> None:
    waits: list[float] = []
    budget = stripe_api.Budget(2.0, clock=lambda: 0.0, sleep=waits.append)
    for _ in range(4):
        budget.take()
    assert waits == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize(
    ("key", "rps"),
    [("sk_live_x", 100.0), ("rk_live_x", 100.0), ("sk_test_x", 25.0), ("rk_test_x", 25.0)],
)
def test_default_budget_follows_the_key_mode(key: str, rps: float) -> None:
    assert stripe_api.Stripe(secret_key=key).budget.rate == rps
    assert stripe_api.Stripe(secret_key=key, rps=0).budget.rate == 0


@pytest.mark.acceptance
def test_the_client_takes_a_token_per_request(fake: FakeStripe) -> None:
    sleep = Recorder()
    stripe = client(fake, sleep, rps=2.0)
    for _ in range(2):
        read_customers(stripe)
    assert sleep.waits == []
    read_customers(stripe)
    assert len(sleep.waits) == 1 and 0 < sleep.waits[0] <= 0.5


# -- pages ------------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_pages_follow_starting_after_until_has_more_is_false(fake: FakeStripe) -> None:
    sleep = Recorder()
    pages = list(client(fake, sleep).pages("listing customers", "/v1/customers"))
    assert [len(p.data) for p in pages] == [100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, False]
    ids = [c["id"] for p in pages for c in p.data]
    assert len(set(ids)) == CUSTOMERS
    assert ids[0] == f"cus_{CUSTOMERS:06d}" and ids[-1] == "cus_000001"  # newest first
    requests = customer_requests(fake)
    assert [r["query"].get("starting_after") for r in requests] == [
        None,
        pages[0].data[-1]["id"],
        pages[1].data[-1]["id"],
    ]
    assert all(r["query"]["limit"] == "100" for r in requests)


@pytest.mark.acceptance
def test_pages_start_after_a_cursor_and_pass_filters(fake: FakeStripe) -> None:
    sleep = Recorder()
    pages = list(
        client(fake, sleep).pages(
            "listing customers", "/v1/customers", starting_after="cus_000051", created={"gte": 0}
        )
    )
    assert [len(p.data) for p in pages] == [50]
    assert pages[0].data[0]["id"] == "cus_000050"
    (request,) = customer_requests(fake)
    assert request["query"] == {
        "limit": "100",
        "starting_after": "cus_000051",
        "created": {"gte": "0"},
    }


@pytest.mark.acceptance
def test_a_page_that_fails_midway_retries_that_page_only(fake: FakeStripe) -> None:
    sleep = Recorder()
    fake.fault("/v1/customers", status=None, delay=0.001)  # page 1: slow but fine
    fake.fault("/v1/customers", status=502)  # page 2: one 502
    pages = list(client(fake, sleep).pages("listing customers", "/v1/customers"))
    assert sum(len(p.data) for p in pages) == CUSTOMERS
    cursors = [r["query"].get("starting_after") for r in customer_requests(fake)]
    assert cursors == [None, "cus_000151", "cus_000151", "cus_000051"]
    assert len(sleep.waits) == 1


@pytest.mark.acceptance
def test_account(fake: FakeStripe) -> None:
    account = client(fake, Recorder()).account()
    assert account["id"] == "acct_fake" and account["default_currency"] == "usd"


@pytest.mark.acceptance
def test_pages_keep_each_objects_text(fake: FakeStripe) -> None:
    pages = list(client(fake, Recorder()).pages("listing customers", "/v1/customers"))
    for page in pages:
        assert [json.loads(text) for text in page.raw] == page.data
        assert all(text.startswith("{") and text.endswith("}") for text in page.raw)


@pytest.mark.parametrize(
    ("body", "data", "has_more"),
    [
        ('{"object":"list","data":[],"has_more":false}', [], False),
        ('{"has_more": true, "data": [ {"id": "a"} , {"id":"b"} ], "url": "/v1/x"}', None, True),
        ('\n{ "data" : [{"id":"c,]}","n":{"x":[1,{"y":"}"}]}}] }\n', None, False),
        ('{"data":[{"id":"\\u00e9\\"q"}],"has_more":1}', None, True),
    ],
)
def test_split_list(body: str, data: list[object] | None, has_more: bool) -> None:
    page = stripe_api.split_list(body)
    assert page.data == (json.loads(body)["data"] if data is None else data)
    assert [json.loads(text) for text in page.raw] == page.data
    assert all(text in body for text in page.raw)
    assert page.has_more is has_more


@pytest.mark.acceptance
@pytest.mark.parametrize(
    "body",
    ['{"data":[1,2]}', '{"data":{"id":"a"}}', "[]", '"data"'],
)
def test_a_page_that_is_not_a_list_is_an_error(fake: FakeStripe, body: str) -> None:
    fake.fault("/v1/customers", status=200, body=body)
    with pytest.raises(errors.StripeError, match="a list that is not one while listing customers"):
        list(client(fake, Recorder()).pages("listing customers", "/v1/customers"))


@pytest.mark.acceptance
@pytest.mark.parametrize("body", ["not json", '{"data":[{"id":"a"}'])
def test_a_page_that_is_not_json_is_an_error(fake: FakeStripe, body: str) -> None:
    fake.fault("/v1/customers", status=200, body=body)
    with pytest.raises(errors.StripeError, match="while listing customers"):
        list(client(fake, Recorder()).pages("listing customers", "/v1/customers"))
