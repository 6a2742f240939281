"""spacelang.units: counts with SI suffixes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacelang.units import format_count, parse_count


@pytest.mark.parametrize(("text", "value"), [
    ("20G", 20 * 10**9), ("68e9", 68 * 10**9), ("300K", 300_000), ("1.5M", 1_500_000),
    ("12g", 12 * 10**9), ("2k", 2000), ("1_000", 1000), (" 7 ", 7), (64, 64), (6.8e10, 68 * 10**9),
])
def test_counts_with_suffixes(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize(("text", "words"), [
    ("20X", "such as 20G"), ("1.5", "whole"), ("0", "> 0"), ("-3G", "> 0"), ("inf", "whole"),
    ("", "such as"), ("5m", "such as"), (True, "such as"),
])
def test_bad_counts_say_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        parse_count(text)


@given(st.integers(1, 10**15))
def test_format_reads_back(value):
    assert parse_count(format_count(value)) == value
