"""Answer extraction: GSM8K-style numbers and normalised knowledge answers."""

import pytest

from moelab.eval.extract import (
    extract_gold,
    extract_knowledge,
    extract_numeric,
    first_line,
    normalize_number,
    normalize_text,
    numbers_match,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("####-7", "-7"),
        ("first #### 5 then #### 6", "5"),  # the first marker wins
        ("12 apples. #### 3.50", "3.50"),
        ("The answer is 42.", "42"),
        ("so the answer is $1,234.56. Then 7 more", "1234.56"),
        ("THE ANSWER IS: -3", "-3"),
        ("#### 8, and the answer is 9", "8"),  # #### beats "the answer is"
        ("3 apples and 4 pears.", "4"),  # last number
        ("He has 1,000,000 dollars", "1000000"),
        ("1,2,3", "3"),  # not a thousands separator
        ("It costs $5.", "5"),
        ("She has -$5 left", "-5"),
        ("a loss of $-12", "-12"),
        ("10 - 5 = 5 eggs", "5"),  # a spaced minus is an operator, not a sign
        ("16-3-4=9", "9"),
        ("we need .5 cups", ".5"),
        ("temperature \u22127 degrees", "-7"),  # unicode minus
        ("x2 and v1.2 are names", None),  # digits inside identifiers are not numbers
        ("no number here", None),
        ("", None),
        ("####", None),
        ("#### twelve, or 12", "12"),  # an empty marker falls through to the last number
    ],
)
def test_extract_numeric(text, expected):
    got = extract_numeric(text)
    if expected is None:
        assert got is None
    else:
        assert normalize_number(got) == normalize_number(expected)


@pytest.mark.parametrize(
    "text, expected",
    [("12.0", "12"), ("12", "12"), ("+12.00", "12"), ("$1,200", "1200"), ("-0", "0"), ("-0.0", "0"),
     ("0.50", "0.5"), ("1200", "1200"), ("18.", "18"), (" 7 ", "7"), ("\u22123", "-3"), ("1e3", "1000")],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text", ["abc", "", "  ", None, "nan", "inf", "1/2", "--3"])
def test_normalize_number_rejects(text):
    assert normalize_number(text) is None


def test_numbers_match():
    assert numbers_match("12.0", "12")
    assert numbers_match("$1,234", "1234")
    assert not numbers_match("12", "13")
    assert not numbers_match(None, "12")
    assert not numbers_match("abc", "abc")  # non-numbers never match numerically


def test_knowledge_extraction():
    assert first_line("\n\n  Lisbon \nQuestion: x") == "Lisbon"
    assert first_line("   ") == ""
    assert extract_knowledge(" The Eiffel Tower!\nnext") == "eiffel tower"
    assert extract_knowledge("  Halden University.") == normalize_text("halden university")
    assert normalize_text("An  Apple, a day.") == "apple day"
    assert normalize_text("Theatre") == "theatre"  # articles only as whole words
    assert extract_knowledge("") == ""


def test_extract_gold():
    assert extract_gold("Janet sells 9 eggs.\n#### 18") == "18"
    assert extract_gold("... \n#### 1,234") == "1234"
    assert extract_gold("  Lisbon \n") == "Lisbon"
    assert extract_gold("code\n#### not a number") == "not a number"
