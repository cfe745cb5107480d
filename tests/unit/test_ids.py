from __future__ import annotations

import collections

from snapshots import ids


def test_new_ids_are_the_prefix_and_random_base62_characters() -> None:
    made = [ids.new("con_") for _ in range(2_000)]
    assert len(set(made)) == len(made)
    for made_id in made:
        assert made_id.startswith("con_")
        assert len(made_id) == len("con_") + ids.LENGTH
        assert set(made_id[4:]) <= set(ids.ALPHABET)
    assert len(ids.new("", 500)) == 500


def test_every_character_is_drawn_about_equally_often() -> None:
    counts = collections.Counter("".join(ids.new("") for _ in range(5_000)))  # 100,000 chars
    expected = 5_000 * ids.LENGTH / len(ids.ALPHABET)  # 1,613 each, give or take 40
    assert set(counts) == set(ids.ALPHABET)
    # Six standard deviations either way. Every byte taken modulo 62 would draw the first 8
    # characters a quarter more often (about 400 more), far beyond.
    assert all(abs(n - expected) < 250 for n in counts.values())
