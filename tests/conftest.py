"""Shared fixtures: a tiny random-weight Qwen2 model with a character-level tokenizer."""

from __future__ import annotations

import string

import pytest


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\t\n\r\x0b\x0c"))
    vocab = {"<pad>": 0, "<eos>": 1} | {c: i + 2 for i, c in enumerate(chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny_lm():
    """``(model, tokenizer)``: a 2-layer Qwen2 with random weights (seeded), float32, CPU."""
    from model_fixtures import qwen2_model

    tokenizer = char_tokenizer()
    model = qwen2_model(tokenizer, len(tokenizer), seed=0, tie=True)
    return model, tokenizer


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory, tiny_lm):
    """The session's tiny random model saved as a Hugging Face directory."""
    model, tokenizer = tiny_lm
    path = tmp_path_factory.mktemp("tiny-random")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory):
    """A random Qwen2 with a byte-level BPE tokenizer, ChatML template and a padded lm_head."""
    from model_fixtures import save_chat_model

    return save_chat_model(tmp_path_factory.mktemp("chat-padded"))


@pytest.fixture(scope="session")
def gguf_model_file(tmp_path_factory):
    """``(gguf_path, source_model, source_tokenizer)``: a float32 GGUF export of a chat model."""
    pytest.importorskip("gguf")
    from model_fixtures import bpe_tokenizer, export_gguf, qwen2_model

    tokenizer = bpe_tokenizer()
    model = qwen2_model(tokenizer, len(tokenizer), seed=1)
    path = export_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny-qwen2-f32.gguf")
    return path, model, tokenizer


@pytest.fixture(autouse=True, scope="session")
def _problem_cache(tmp_path_factory):
    """Generated problem sets cached in the session's own folder, not the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("problem-cache")
    saved = os.environ.get("ENTROPY_DYNAMICS_CACHE")
    os.environ["ENTROPY_DYNAMICS_CACHE"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("ENTROPY_DYNAMICS_CACHE", None)
    else:
        os.environ["ENTROPY_DYNAMICS_CACHE"] = saved
