"""The embedded model's character-level tokenizer (``models/tokenizer.py``): every printable ASCII
character and any other text byte by byte round-trip, and a completion decodes to its answer."""

from __future__ import annotations

from entropy_dynamics.models import build_tokenizer
from entropy_dynamics.models.tokenizer import SPECIAL_TOKENS, byte_symbols


def test_tokenizer_round_trips_every_printable_ascii_character():
    tokenizer = build_tokenizer()
    printable = "".join(chr(code) for code in range(0x20, 0x7F)) + "\n\t"
    text = printable + "  (3+4) * 5 -> 35: \n\n x"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per ASCII character
    assert tokenizer.decode(ids) == text
    # byte b has id b + 2, after <pad> = 0 and <eos> = 1: 258 tokens in all
    assert ids == [ord(c) + 2 for c in text]
    assert len(tokenizer) == 258
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert tokenizer.convert_ids_to_tokens([0, 1]) == list(SPECIAL_TOKENS)


def test_tokenizer_round_trips_non_ascii_text_byte_by_byte():
    tokenizer = build_tokenizer()
    text = "é → 中"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [b + 2 for b in text.encode("utf-8")]
    assert tokenizer.decode(ids) == text


def test_byte_symbols_match_the_byte_level_pre_tokenizer():
    from tokenizers import pre_tokenizers

    symbols = byte_symbols()
    assert len(set(symbols)) == 256
    assert set(symbols) == set(pre_tokenizers.ByteLevel.alphabet())
    assert (symbols[ord(" ")], symbols[ord("\n")], symbols[ord("a")]) == ("Ġ", "Ċ", "a")


def test_completion_ids_with_eos_and_padding_decode_to_the_exact_answer():
    tokenizer = build_tokenizer()
    answer = "(19-6)*4-9"
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    completion = ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * 3
    assert tokenizer.decode(completion, skip_special_tokens=True) == answer
