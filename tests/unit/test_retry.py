from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshots import retry


def raw_wait(failures: int) -> float:
    """The un-jittered wait of the n-th failure, as the module docstring states it."""
    return min(retry.BASE * 2 ** max(failures - 1, 0), retry.CAP)


@pytest.mark.parametrize(
    ("failures", "expected_raw"),
    [
        pytest.param(1, 5.0, id="first-failure-waits-base"),
        pytest.param(2, 10.0, id="second-doubles"),
        pytest.param(3, 20.0, id="third-doubles-again"),
        pytest.param(7, 320.0, id="seventh"),
        pytest.param(10, 2560.0, id="tenth-below-cap"),
        pytest.param(11, 3600.0, id="eleventh-capped"),
        pytest.param(40, 3600.0, id="far-past-cap"),
        pytest.param(0, 5.0, id="zero-treated-as-first"),
    ],
)
def test_backoff_is_exponential_jittered_and_capped(failures: int, expected_raw: float) -> None:
    rng = random.Random(failures)
    waits = [retry.backoff(failures, rng=rng) for _ in range(500)]
    assert all(expected_raw * 0.5 <= w <= expected_raw for w in waits)
    # The jitter spreads the whole [0.5, 1.0] band, so items failing together separate.
    assert min(waits) < expected_raw * 0.55
    assert max(waits) > expected_raw * 0.95


def test_backoff_with_the_same_seed_is_repeatable() -> None:
    first = [retry.backoff(n, rng=random.Random(7)) for n in range(1, 12)]
    second = [retry.backoff(n, rng=random.Random(7)) for n in range(1, 12)]
    assert first == second


def test_backoff_without_rng_uses_the_global_random() -> None:
    wait = retry.backoff(4)
    assert 20.0 <= wait <= 40.0
    assert isinstance(wait, float)


def test_backoff_never_overflows_for_huge_failure_counts() -> None:
    # max_attempts has no upper bound in Settings, so a long-failing item can reach this.
    assert retry.CAP * 0.5 <= retry.backoff(5_000, rng=random.Random(1)) <= retry.CAP


@given(failures=st.integers(min_value=1, max_value=60), seed=st.integers(0, 2**32))
def test_backoff_stays_in_its_band(failures: int, seed: int) -> None:
    wait = retry.backoff(failures, rng=random.Random(seed))
    assert raw_wait(failures) * 0.5 <= wait <= raw_wait(failures)
    assert wait <= retry.CAP


@given(failures=st.integers(min_value=1, max_value=60))
def test_raw_backoff_never_shrinks(failures: int) -> None:
    assert raw_wait(failures + 1) >= raw_wait(failures)


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "permanent", "dead"),
    [
        pytest.param(1, 8, False, False, id="first-failure-retries"),
        pytest.param(7, 8, False, False, id="one-before-the-last-retries"),
        pytest.param(8, 8, False, True, id="last-attempt-goes-dead"),
        pytest.param(9, 8, False, True, id="past-the-last-goes-dead"),
        pytest.param(1, 1, False, True, id="single-attempt-allowed"),
        pytest.param(1, 8, True, True, id="permanent-goes-dead-at-once"),
        pytest.param(3, 8, True, True, id="permanent-later-also-dead"),
    ],
)
def test_decide(attempts: int, max_attempts: int, permanent: bool, dead: bool) -> None:
    decision = retry.decide(attempts=attempts, max_attempts=max_attempts, permanent=permanent)
    assert decision.dead is dead
    if dead:
        assert decision.delay == 0.0
    else:
        # `attempts` counts this failure too: the n-th failure waits the n-th backoff.
        assert raw_wait(attempts) * 0.5 <= decision.delay <= raw_wait(attempts)


def test_decide_delays_grow_with_each_failure() -> None:
    delays = [
        retry.decide(attempts=n, max_attempts=100, permanent=False).delay for n in range(1, 12)
    ]
    # Jitter is at most a factor 2, and each raw step doubles: the band minimum of step n+2
    # is above the band maximum of step n, so every second delay is strictly larger.
    assert all(delays[i + 2] > delays[i] for i in range(len(delays) - 4))


def test_retry_decision_is_a_frozen_value() -> None:
    decision = retry.RetryDecision(dead=False, delay=1.5)
    assert decision == retry.RetryDecision(dead=False, delay=1.5)
    with pytest.raises(AttributeError):
        decision.dead = True  # type: ignore[misc]
