"""Character-level tokenizer of the embedded model: one token per byte (per ASCII character).

Vocabulary (258 tokens): ``<pad>`` = 0, ``<eos>`` = 1, then the 256 bytes, byte ``b`` at id
``b + 2``. It is a byte-level BPE with *no merges*, built with the ``tokenizers`` library and
wrapped in ``transformers.PreTrainedTokenizerFast``: every character of printable ASCII is one
token, any (NFC) text round-trips exactly, and no special token is added when encoding (a
training target appends ``<eos>`` explicitly).

Why byte-level BPE rather than a ``WordLevel`` model over characters: ``AutoTokenizer`` in
transformers ≥ 5 loads the tokenizer of a ``qwen2`` model directory as ``Qwen2Tokenizer``
whatever ``tokenizer_config.json`` says, and that class rebuilds the pipeline (NFC normaliser,
byte-level pre-tokenizer and decoder, BPE over ``vocab`` and ``merges`` from ``tokenizer.json``).
Using exactly that pipeline, with an empty merge list, makes the tokenizer we train with and the
one any Hugging Face user loads from the directory the same function of the text.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SPECIAL_TOKENS", "build_tokenizer", "byte_symbols", "save_tokenizer"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>")
"""Special tokens, in id order: padding, end of sequence."""


def byte_symbols() -> list[str]:
    """The printable stand-in of each byte ``0..255`` used by byte-level BPE (GPT-2's mapping).

    Bytes that are printable Latin-1 characters other than space stand for themselves; the other
    68 (controls, space, ...) are mapped in order to ``chr(256)``, ``chr(257)``, ... — so a space
    is ``'Ġ'`` and a newline ``'Ċ'``, the symbols the ``tokenizers`` ByteLevel pre-tokenizer uses.
    """
    kept = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)}
    kept |= set(range(ord("®"), ord("ÿ") + 1))
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in kept:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def build_tokenizer():
    """A fresh ``PreTrainedTokenizerFast`` over :data:`SPECIAL_TOKENS` and the 256 bytes.

    ``tokenizer.decode(tokenizer(text).input_ids) == text`` for every NFC-normalised string (all
    ASCII text); an ASCII string of ``n`` characters is ``n`` tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab |= {symbol: len(SPECIAL_TOKENS) + byte for byte, symbol in enumerate(byte_symbols())}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    # the Qwen2Tokenizer pipeline (see module docstring), minus its word-splitting regex, which
    # cannot change the result when there are no merges
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        clean_up_tokenization_spaces=False,  # " ," must stay " ,"
        model_max_length=1024,
    )


def save_tokenizer(tokenizer, directory: str | Path) -> None:
    """``save_pretrained`` plus a portable ``tokenizer_class``.

    transformers ≥ 5 writes its internal class name (``TokenizersBackend``), which 4.x cannot
    resolve; ``PreTrainedTokenizerFast`` loads the same ``tokenizer.json`` in both.
    """
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
