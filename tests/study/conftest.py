"""Fixtures of the study tests: a rollout of the tiny model shared by a module's analysis tests, and
one torch thread for the modules that ask for it."""

from __future__ import annotations

import pytest
import torch
from analysis_helpers import PROMPTS

from entropy_dynamics.training.rollout import generate


@pytest.fixture(scope="module")
def one_thread():
    # Tiny models: one thread is as fast, and 50x faster when other jobs load the CPU cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rollout(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    return generate(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=6)
