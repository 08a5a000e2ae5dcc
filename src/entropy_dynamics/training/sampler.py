"""The decoding loop of a rollout: sample from ``softmax(z / T)`` with a key/value cache, record the
statistics of every sampled token, and drop each row from the batch once it has ended.

``model.generate`` keeps every row in every step until the longest response ends; a GRPO batch's
responses end at very different lengths, so most of its late steps compute rows that are already
done. :func:`decode` samples the same distribution (temperature, nucleus truncation, greedy) in its
own loop: each distinct prompt is prefilled once and its cache repeated to the rows that share it
(:mod:`~entropy_dynamics.training.prompt_cache`), and a row that emits EOS leaves the batch — its
cache rows with it — after that step. On the embedded default a rollout takes 0.031 s instead of
``generate``'s 0.051 s. :func:`hf_decode` is ``model.generate`` with the same statistics (a logits
processor), for models whose cache cannot be gathered or repeated; the rollout picks it where
:func:`~entropy_dynamics.training.prompt_cache.check_shared_prefill` fails.

Both return ``(response_ids (N, R), statistics (N, R))``: ``N = B · num_samples`` rows (a prompt's
samples contiguous), ``R`` the longest response, ``pad_id`` after each row's EOS; the statistics
are of ``softmax(z / T)`` before top-p truncation, as in the reference implementation. Randomness
comes from torch's global generator only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.stats import TokenStats, token_stats
from entropy_dynamics.training.prompt_cache import cache_keyword, shared_prefill

__all__ = ["decode", "hf_decode", "nucleus"]


def nucleus(scores: Tensor, top_p: float) -> Tensor:
    """``scores`` ``(n, V)`` with the tokens outside the top-``p`` nucleus set to ``-inf``:
    sorted ascending, a token goes when the probability of those before it is ``<= 1 - top_p``;
    the most likely one always stays (transformers' ``TopPLogitsWarper``)."""
    if top_p >= 1.0:
        return scores
    ordered, order = torch.sort(scores, descending=False)  # (n, V)
    cumulative = ordered.softmax(-1).cumsum(-1)
    remove = cumulative <= 1 - top_p
    remove[:, -1] = False
    return scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))


def _fields(stats: TokenStats) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four fields in order (``dataclasses.astuple`` would deep-copy every tensor)."""
    return stats.logprobs, stats.entropy, stats.discriminator, stats.expected_discriminator


def _first_logits(model, prompt_ids: Tensor, prompt_mask: Tensor, repeats: int):
    """``(logits (N, V) of the first response token, cache)`` after prefilling each of the
    ``B`` prompts once and repeating both ``repeats`` times."""
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens from 0
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                use_cache=True)  # fmt: skip
    cache = out.get(cache_keyword(model))
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    return out.logits[:, -1].float().repeat_interleave(repeats, 0), cache


@torch.no_grad()
def decode(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    do_sample: bool,
    eos_ids: list[int],
    pad_id: int,
    valid_vocab: int | None,
) -> tuple[Tensor, TokenStats]:
    """Sample ``num_samples`` responses to each of the ``B`` left-padded prompts ``(B, P)``,
    every finished row leaving the batch (module docstring); the model is used as it is (the
    caller puts it in eval mode)."""
    logits, cache = _first_logits(model, prompt_ids, prompt_mask, num_samples)  # (N, V)
    n, device = logits.shape[0], logits.device
    attention = prompt_mask.repeat_interleave(num_samples, 0)  # (n_active, P + t)
    position = attention.sum(-1) - 1  # (n_active,) position of the last token
    active = torch.arange(n, device=device)  # batch row of each active row
    eos = torch.tensor(eos_ids, device=device)
    tokens = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    fields = [torch.zeros(n, max_new_tokens, device=device) for _ in range(4)]  # (N, R_max)
    steps = 0
    for step in range(max_new_tokens):
        if valid_vocab is not None:  # padded output rows are not tokens: never sampled
            logits[:, valid_vocab:] = float("-inf")
        if do_sample:  # the exponential race: argmax p_i / E_i, E_i ~ Exp(1), picks i w.p. p_i
            probs = nucleus(logits / temperature, top_p).softmax(-1)  # (n_active, V)
            # E_i = -log U_i, U_i ~ U[0, 1): on a CPU 6x faster than exponential_() (a scalar loop)
            race = torch.rand_like(probs).log_().neg_()
            token = probs.div_(race).argmax(-1)  # (n_active,)
        else:
            token = logits.argmax(-1)
        stats = token_stats(logits, token, temperature)  # of softmax(z / T), before top-p
        tokens[active, step] = token
        for field, value in zip(fields, _fields(stats), strict=True):
            field[active, step] = value.float()
        steps = step + 1
        going = ~torch.isin(token, eos)  # (n_active,): rows that emitted no EOS continue
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        if not bool(going.all()):  # the finished rows leave the batch, cache included
            keep = going.nonzero()[:, 0]
            cache.batch_select_indices(keep)
            active, attention, position, token = (x[keep] for x in (active, attention,
                                                                    position, token))  # fmt: skip
        attention = torch.cat([attention, attention.new_ones(len(active), 1)], 1)
        position = position + 1
        out = model(input_ids=token[:, None], attention_mask=attention,
                    position_ids=position[:, None], use_cache=True,
                    **{cache_keyword(model): cache})  # fmt: skip
        logits, cache = out.logits[:, -1].float(), out.get(cache_keyword(model))
    return tokens[:, :steps], TokenStats(*(field[:, :steps] for field in fields))


class _SamplingStatsRecorder:
    """Logits processor recording :class:`TokenStats` of ``softmax(z / T)`` at each sampled token.

    ``generate`` calls it once per step with the raw float32 logits ``z`` ``(N, V)``, before
    temperature and top-p (custom processors run before the sampling warpers). The token drawn at
    step ``t`` is only known at step ``t + 1`` (last column of ``input_ids``), or from the returned
    sequences for the last step, so one step of logits is held back.
    """

    def __init__(self, temperature: float, valid_vocab: int | None = None) -> None:
        self.temperature = temperature
        self.valid_vocab = valid_vocab
        self.pending: Tensor | None = None
        self.steps: list[TokenStats] = []  # (N,) fields, one per sampling step

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.pending is not None:
            self._record(input_ids[:, -1])
        if self.valid_vocab is not None:  # padded output rows are not tokens: never sampled
            scores = scores.clone()
            scores[:, self.valid_vocab :] = float("-inf")
        self.pending = scores.detach().clone()  # later processors may work in place
        return scores

    def _record(self, tokens: Tensor) -> None:
        self.steps.append(token_stats(self.pending, tokens, self.temperature))  # (N,) each
        self.pending = None

    def finish(self, response_ids: Tensor) -> TokenStats:
        """``(N, R)`` float32 statistics of every step, given the sampled ``(N, R)`` response."""
        if self.pending is not None:
            self._record(response_ids[:, -1])
        if len(self.steps) != response_ids.shape[1]:
            raise RuntimeError(
                f"recorded {len(self.steps)} sampling steps for {response_ids.shape[1]} "
                "response tokens: model.generate did not call the logits processor once per token"
            )
        columns = zip(*(_fields(step) for step in self.steps), strict=True)
        return TokenStats(*(torch.stack(column, 1).float() for column in columns))


@torch.no_grad()
def hf_decode(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    do_sample: bool,
    eos_ids: list[int],
    pad_id: int,
    valid_vocab: int | None,
    share_prefill: bool = False,
) -> tuple[Tensor, TokenStats]:
    """:func:`decode`'s result from ``model.generate`` (every row to the end), its statistics
    recorded by a logits processor; ``share_prefill``: prefill each prompt once."""
    from transformers import GenerationConfig, LogitsProcessorList

    recorder = _SamplingStatsRecorder(temperature, valid_vocab)
    saved = model.generation_config
    # generate() fills every option we leave unset from model.generation_config (a checkpoint's
    # top_k=20, repetition_penalty=1.05, ...): a neutral config keeps sampling = softmax(z / T).
    model.generation_config = GenerationConfig(
        bos_token_id=getattr(saved, "bos_token_id", None), eos_token_id=eos_ids, pad_token_id=pad_id
    )
    try:
        cached = None
        if share_prefill and num_samples > 1:
            cached = shared_prefill(model, prompt_ids, prompt_mask, num_samples)
        sequences = model.generate(
            **({cache_keyword(model): cached} if cached is not None else {}),
            input_ids=prompt_ids.repeat_interleave(num_samples, 0),  # (N, P)
            attention_mask=prompt_mask.repeat_interleave(num_samples, 0),
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=0 if do_sample else None,  # 0 disables top-k (the global default is 50)
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList([recorder]),
            return_dict_in_generate=False,
        )
    finally:
        model.generation_config = saved
    response_ids = sequences[:, prompt_ids.shape[1] :]  # (N, R)
    return response_ids, recorder.finish(response_ids)
