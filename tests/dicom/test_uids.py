"""The UID grammar guards every file name: valid UIDs pass, nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mercury.dicom.uids import MAX_UID_LENGTH, generate_uid, is_valid_uid

component = st.one_of(
    st.just("0"),
    st.from_regex(r"[1-9][0-9]{0,38}", fullmatch=True),
)
uid_grammar = (
    st.lists(component, min_size=1, max_size=32)
    .map(".".join)
    .filter(lambda uid: len(uid) <= MAX_UID_LENGTH)
)


@given(uid_grammar)
@settings(max_examples=500)
def test_every_uid_from_the_grammar_is_valid(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "0",
        "1",
        "1.2",
        "0.0.0",
        "1.2.840.10008.5.1.4.1.1.2",
        "2.25.329800735698586629295641978511506172918",
        "1." + "2" * 62,  # exactly 64 characters
    ],
)
def test_valid_examples(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "01.2",
        "1.02",
        "1.2.00",
        "1.2/3",
        "../1.2",
        "1.2/../3",
        "1.2\x00",
        "1.2 ",
        " 1.2",
        "1. 2",
        "1.2\n",
        "1.2a",
        "abc",
        "1.2.3e4",
        "-1.2",
        "+1.2",
        "1,2",
        "1.2\\3.4",
        "1.٣",  # an Arabic-Indic digit: a digit to Unicode, not to DICOM
        "1.２",  # a fullwidth digit  # noqa: RUF001
        "1." + "2" * 63,  # 65 characters
    ],
)
def test_invalid_examples(value: str) -> None:
    assert not is_valid_uid(value)


def test_non_strings_are_invalid() -> None:
    assert not is_valid_uid(None)  # type: ignore[arg-type]
    assert not is_valid_uid(b"1.2.3")  # type: ignore[arg-type]
    assert not is_valid_uid(123)  # type: ignore[arg-type]


@given(uid_grammar, st.sampled_from(["/", "..", "\x00", " ", "a", "Z", "\\", ":", "\n", "%"]))
@example("1.2.3", "/")
@settings(max_examples=500)
def test_inserting_a_forbidden_character_anywhere_invalidates(uid: str, bad: str) -> None:
    for position in range(len(uid) + 1):
        assert not is_valid_uid(uid[:position] + bad + uid[position:])


@given(uid_grammar, st.data())
@settings(max_examples=300)
def test_leading_zeros_and_empty_components_are_invalid(uid: str, data: st.DataObject) -> None:
    parts = uid.split(".")
    index = data.draw(st.integers(0, len(parts) - 1))
    with_zero = [*parts[:index], "0" + parts[index], *parts[index + 1 :]]
    assert not is_valid_uid(".".join(with_zero))
    with_empty = [*parts[:index], "", *parts[index:]]
    assert not is_valid_uid(".".join(with_empty))


@given(uid_grammar.filter(lambda uid: len(uid) < MAX_UID_LENGTH), st.integers(1, 64))
def test_too_long_is_invalid(uid: str, extra: int) -> None:
    longer = uid + "." + "1" * max(1, MAX_UID_LENGTH - len(uid) + extra)
    assert len(longer) > MAX_UID_LENGTH
    assert not is_valid_uid(longer)


@given(st.text(max_size=80))
@settings(max_examples=1000)
def test_arbitrary_text_is_valid_only_if_it_matches_the_grammar(text: str) -> None:
    parts = text.split(".")
    by_grammar = (
        0 < len(text) <= MAX_UID_LENGTH
        and all(part and part.isascii() and part.isdigit() for part in parts)
        and all(part == "0" or not part.startswith("0") for part in parts)
    )
    assert is_valid_uid(text) == by_grammar


def test_generated_uids_are_valid_and_unique() -> None:
    uids = {generate_uid() for _ in range(1000)}
    assert len(uids) == 1000
    assert all(is_valid_uid(uid) and uid.startswith("2.25.") for uid in uids)
