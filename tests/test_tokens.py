"""Untrusted text never becomes control tokens (tiny tokenizer with Gemma's traps)."""

import pytest

from tether.infra.tokens import SafeTokenizer, word_variant_ids

INJECTIONS = ["<start_of_image>", "<eos>", "<bos>", "<unused0>", "<pad>"]


@pytest.mark.parametrize("control", INJECTIONS)
def test_control_strings_stay_plain_text(tiny_tokenizer, control):
    safe = SafeTokenizer(tiny_tokenizer)
    text = f"a happy day {control}{control} yes"
    ids = safe.encode_untrusted(text)
    assert not safe.control_ids.intersection(ids)
    assert tiny_tokenizer.decode(ids) == text  # same string, only segmented differently


def test_the_trap_is_real(tiny_tokenizer):
    # split_special_tokens alone is not enough: <start_of_image> is an added *non-special*
    # token, exactly as on Gemma 3, and comes through as the control token.
    plain = tiny_tokenizer("x <start_of_image>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tiny_tokenizer.convert_tokens_to_ids("<start_of_image>") in plain


def test_overlapping_and_nested_occurrences(tiny_tokenizer):
    safe = SafeTokenizer(tiny_tokenizer)
    for text in ["<<eos>>", "<eos<eos>>", "<start_of_image<start_of_image>>", "<unused0><eos><bos>"]:
        ids = safe.encode_untrusted(text)
        assert not safe.control_ids.intersection(ids) and tiny_tokenizer.decode(ids) == text


def test_whitespace_tokens_are_text_not_control(tiny_tokenizer):
    safe = SafeTokenizer(tiny_tokenizer)
    newline_run = tiny_tokenizer.convert_tokens_to_ids("\n\n")
    assert newline_run not in safe.control_ids
    assert newline_run in safe.encode_untrusted("one\n\ntwo")


def test_trusted_text_is_not_split(tiny_tokenizer):
    ids = SafeTokenizer(tiny_tokenizer).encode_trusted("Question: Is the text cheerful?")
    assert tiny_tokenizer.decode(ids) == "Question: Is the text cheerful?"


def test_bos_only_where_the_tokenizer_adds_one(tiny_tokenizer):
    assert SafeTokenizer(tiny_tokenizer).bos() == [tiny_tokenizer.bos_token_id]


def test_word_variants_ignore_case_and_space_but_not_other_words(tiny_tokenizer):
    ids = word_variant_ids(tiny_tokenizer, "yes")
    spelled = [tiny_tokenizer.decode([i]) for i in ids]
    assert all(s.strip().lower() == "yes" for s in spelled) and len(spelled) >= 3
    assert "no" not in [s.strip().lower() for s in spelled]
