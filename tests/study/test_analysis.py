"""analysis: token table against a float64 reference, HTML page, one-step check, analyze, CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import typer
from typer.testing import CliRunner

from entropy_dynamics import theory
from entropy_dynamics.cli.analyze import analyze_command
from entropy_dynamics.study.analysis import (
    DEFAULT_LR,
    TABLE_COLUMNS,
    analyze,
    one_step_check,
    quadrant,
    token_table,
)
from entropy_dynamics.study.analysis_html import deviation_colour, render_html
from entropy_dynamics.study.one_step import _position_changes
from entropy_dynamics.training.rollout import generate, teacher_forcing_inputs

PROMPTS = ["3 5 9 -> 7: ", "12 4 -> 3: "]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
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


def _reference_logits(model, rollout):
    """``(N, R, V)`` float64 logits of the float32 model from a plain forward pass."""
    with torch.no_grad():
        logits = model(**teacher_forcing_inputs(rollout)).logits
    return logits[:, rollout.prompt_length - 1 : -1].double()


def _entropy_by_hand(logits):
    shifted = logits - logits.max(-1, keepdim=True).values
    p = shifted.exp() / shifted.exp().sum(-1, keepdim=True)
    return p, -(p * p.log()).sum(-1)


def test_quadrant_names() -> None:
    # the names of dynamics.py: advantage sign first, then the sign of S_k - E_p[S]
    assert quadrant(1.0, 0.3) == "pos_adv_pos_dev"
    assert quadrant(2.0, -1e-9) == "pos_adv_neg_dev"
    assert quadrant(-0.5, 0.1) == "neg_adv_pos_dev"
    assert quadrant(-1.0, -0.1) == "neg_adv_neg_dev"
    assert quadrant(0.0, 0.1) == "none" and quadrant(1.0, 0.0) == "none"


def test_token_table_equals_float64_reference(tiny_lm, rollout) -> None:
    model, tokenizer = tiny_lm
    advantages = torch.tensor([1.0, -1.0, 0.0, 2.0, -0.5, 1.0])
    rows = token_table(model, tokenizer, rollout, advantage_sign=advantages, rows_per_chunk=4)
    mask = rollout.response_mask
    assert len(rows) == int(mask.sum())
    assert all(tuple(row) == TABLE_COLUMNS for row in rows)
    p, h = _entropy_by_hand(_reference_logits(model, rollout))  # (N, R, V), (N, R)
    for row in rows:
        i, t = row["sample"], row["position"]
        assert mask[i, t]
        k = int(rollout.response_ids[i, t])
        assert row["token_id"] == k and row["prompt"] == i // 3
        assert row["token"] == tokenizer.decode([k])
        p_k = p[i, t, k].item()
        s_k = p_k * (h[i, t].item() + math.log(p_k))  # S_k = p_k (H + log p_k)
        e_s = (p[i, t] ** 2 * (h[i, t] + p[i, t].log())).sum().item()  # Σ p_i² (H + log p_i)
        assert row["p_k"] == pytest.approx(p_k, rel=1e-5)
        assert row["logp"] == pytest.approx(math.log(p_k), abs=1e-5)
        assert row["entropy"] == pytest.approx(h[i, t].item(), abs=1e-5)
        assert row["discriminator"] == pytest.approx(s_k, abs=1e-6)
        assert row["expected_discriminator"] == pytest.approx(e_s, abs=1e-6)
        assert row["deviation"] == pytest.approx(s_k - e_s, abs=1e-6)
        assert row["advantage"] == advantages[i].item()
        assert row["quadrant"] == quadrant(advantages[i].item(), row["deviation"])
    # a constant sign labels every token by the sign of its deviation alone
    negative = token_table(model, tokenizer, rollout, advantage_sign=-1, rows_per_chunk=None)
    for row, other in zip(rows, negative, strict=True):
        assert other["entropy"] == pytest.approx(row["entropy"], abs=1e-6)
        assert other["quadrant"] == (
            "neg_adv_pos_dev" if row["deviation"] > 0 else "neg_adv_neg_dev"
        )
    with pytest.raises(ValueError, match="advantage_sign"):
        token_table(model, tokenizer, rollout, advantage_sign=torch.ones(2))


def _row(sample: int, position: int, token: str, deviation: float) -> dict:
    return {
        "sample": sample,
        "prompt": 0,
        "position": position,
        "token_id": 7,
        "token": token,
        "logp": -0.5,
        "p_k": 0.6065,
        "entropy": 1.25,
        "discriminator": 0.123,
        "expected_discriminator": 0.123 - deviation,
        "deviation": deviation,
        "advantage": 1.0,
        "quadrant": quadrant(1.0, deviation),
    }


def test_html_one_escaped_span_per_token_with_hover_values() -> None:
    rows = [
        _row(0, 0, "<b>", 0.2),
        _row(0, 1, "a&b", -0.2),
        _row(0, 2, "\n", 0.0),
        _row(1, 0, ' "q" ', 0.05),
        _row(1, 1, "  ", -0.05),
    ]
    page = render_html(rows, prompts=["<script>alert(1)</script>"], advantages=[1.0, -1.0])
    assert page.count('<span class="tok"') == len(rows)
    assert "<b>" not in page and "&lt;b&gt;" in page and "a&amp;b" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "↵" in page and "·" in page  # a newline and a space-only token stay visible
    assert page.count("p_k = 0.6065") == len(rows) and "S_k - E_p[S] = -0.2" in page
    assert "E_p[S] = 0.323" in page  # 0.123 - (-0.2), in the hover text
    # symmetric diverging scale: ±d get mirrored colours, 0 is white, beyond the scale saturates
    assert deviation_colour(0.0, 0.2) == "rgb(255,255,255)"
    assert deviation_colour(0.2, 0.2) == deviation_colour(5.0, 0.2) == "rgb(214,39,40)"
    assert deviation_colour(-0.1, 0.2) == "rgb(143,187,218)"  # halfway to (31,119,180): exact
    # halfway to (214,39,40): 255 - 41/2 = 234.5 rounds (half to even) to 234
    assert deviation_colour(0.1, 0.2) == "rgb(234,147,148)"


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_step_check_leaves_the_model_alone(tiny_lm, rollout) -> None:
    model, _ = tiny_lm
    before, training = _state(model), model.training
    result = one_step_check(model, rollout, 1.0, lr=0.5)
    assert result.overall["actual"] != 0.0  # the copy did move
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training == training


def test_one_step_check_against_an_independent_sgd_step(tiny_lm, rollout) -> None:
    # Reference: a float64 copy, one SGD step on the token mean of -A log p_k computed from the
    # full logits by log_softmax, entropies by hand before and after.
    model, _ = tiny_lm
    mask = rollout.response_mask
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    lr = 0.05
    reference = copy.deepcopy(model).double().eval()
    logits0 = _reference_logits(reference, rollout)
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr)
    log_p = torch.log_softmax(reference(**teacher_forcing_inputs(rollout)).logits, -1)
    log_p_k = log_p[:, rollout.prompt_length - 1 : -1].gather(
        -1, rollout.response_ids.unsqueeze(-1)
    )[..., 0]
    loss = -(advantages[:, None] * log_p_k)[mask].sum() / mask.sum()
    loss.backward()
    optimizer.step()
    delta_h = (
        _entropy_by_hand(_reference_logits(reference, rollout))[1] - _entropy_by_hand(logits0)[1]
    )

    result = one_step_check(
        model, rollout, advantages, lr=lr, dtype=torch.float64, rows_per_chunk=4
    )
    assert torch.allclose(result.token_actual, delta_h[mask], rtol=1e-7, atol=1e-12)
    assert result.overall["actual"] == pytest.approx(delta_h[mask].mean().item(), rel=1e-7)
    per_sequence = (delta_h * mask).sum(-1) / mask.sum(-1)
    assert torch.allclose(result.actual, per_sequence, rtol=1e-7, atol=1e-12)
    assert result.num_tokens.tolist() == mask.sum(-1).tolist()


def test_first_order_prediction_at_a_small_step(tiny_lm, rollout) -> None:
    model, _ = tiny_lm
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    # the default step, float32 copy; near maximal entropy (random weights) the second-order
    # term takes over early: r = 0.98 at lr 1e-2, relative error 0.68 (measured)
    result = one_step_check(model, rollout, advantages)
    assert result.lr == DEFAULT_LR == 1e-4
    assert result.r_first_order >= 0.99
    assert result.first_order_rel_error < 0.02
    assert result.overall["first_order"] == pytest.approx(result.overall["actual"], rel=0.02)
    summary = result.to_dict()
    assert summary["pearson_r"]["first_order_vs_actual"] == pytest.approx(result.r_first_order)
    assert len(summary["per_sequence"]) == 6
    with pytest.raises(ValueError, match="advantages"):
        one_step_check(model, rollout, torch.ones(5))
    with pytest.raises(ValueError, match="lr"):
        one_step_check(model, rollout, 1.0, lr=0.0)


def test_theorem_3_3_fit_recovers_an_exact_grpo_logit_step() -> None:
    # If the logits move exactly by α A (e_k - p) / T, the fitted step is α and the prediction
    # is theory.grpo_entropy_change (logits are their own features here).
    gen = torch.Generator().manual_seed(0)
    z0 = 2.0 * torch.randn(10, 17, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, 17, (10,), generator=gen)
    coef = torch.randn(10, generator=gen, dtype=torch.float64)
    alpha, temperature = 3e-3, 0.7
    z1 = z0 + theory.grpo_logit_update(z0, tokens, coef, alpha, temperature)
    actual, first, thm33, fitted = _position_changes(
        lambda z: z, lambda z: z, z0, z1, tokens, coef, temperature
    )
    assert fitted == pytest.approx(alpha, rel=1e-10)
    expected = theory.grpo_entropy_change(z0, tokens, coef, alpha, temperature)
    assert torch.allclose(thm33, expected, rtol=1e-10, atol=0)
    assert torch.allclose(first, expected, rtol=1e-10, atol=0)  # Δz is exactly the GRPO step
    assert torch.allclose(actual, theory.entropy_change(z0, z1 - z0, temperature))


def test_analyze_writes_every_file(tiny_lm, tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    model, tokenizer = tiny_lm
    rewards = {0: 1.0}  # reward 1 for samples of prompt 0 ending in an even-length completion

    def scorer(index: int, completion: str) -> float:
        return rewards.get(index, 0.0) * (len(completion) % 2 == 0)

    result = analyze(
        model,
        tokenizer,
        PROMPTS,
        num_samples=3,
        max_new_tokens=5,
        scorer=scorer,
        seed=3,
        output_dir=tmp_path,
    )
    assert set(result.paths) == {"csv", "parquet", "html", "json"}
    table = pd.read_csv(result.paths["csv"], keep_default_na=False)
    assert list(table.columns) == list(TABLE_COLUMNS) and len(table) == len(result.rows)
    assert len(pd.read_parquet(result.paths["parquet"])) == len(result.rows)
    assert result.paths["html"].read_text().count('<span class="tok"') == len(result.rows)
    summary = json.loads(result.paths["json"].read_text())
    assert summary["lr"] == result.one_step.lr and len(summary["per_sequence"]) == 6
    assert summary["advantage_source"] == result.advantage_source
    assert [s["completion"] for s in summary["per_sequence"]] == result.rollout.completions
    if result.advantage_source == "grpo":
        assert result.advantages.tolist() == pytest.approx(
            [s["advantage"] for s in summary["per_sequence"]]
        )
    # without a scorer every response gets the constant sign
    plain = analyze(
        model, tokenizer, PROMPTS[:1], num_samples=2, max_new_tokens=3, advantage_sign=-1
    )
    assert plain.advantages.tolist() == [-1.0, -1.0] and plain.paths == {}
    assert all(
        row["quadrant"].startswith("neg_adv") or row["quadrant"] == "none" for row in plain.rows
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("analyze")(analyze_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the sub-command name
    return app


def test_cli_analyze_end_to_end(random_model_dir, chat_model_dir, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "countdown"
    args = ["analyze", "--model", str(random_model_dir), "-n", "2", "--samples", "2"]
    args += ["--max-new-tokens", "4", "--device", "cpu", "-o", str(out)]
    result = runner.invoke(_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("tokens.csv", "tokens.parquet", "tokens.html", "one_step.json"):
        assert (out / name).is_file() and str(out / name) in result.output.replace("\n", "")
    assert "Pearson r first order vs actual" in result.output
    constant = runner.invoke(_app(), [*args, "--constant-advantage", "--advantage-sign", "-1"])
    assert constant.exit_code == 0, constant.output
    summary = json.loads((out / "one_step.json").read_text())
    assert summary["advantage_source"].startswith("constant -1")
    assert [s["advantage"] for s in summary["per_sequence"]] == [-1.0] * 4

    # a math dataset through a chat model with a padded lm_head
    data = tmp_path / "gsm8k.jsonl"
    records = [{"question": f"What is {a} + 2?", "answer": f"so #### {a + 2}"} for a in range(3)]
    data.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    out = tmp_path / "math"
    args = ["analyze", "--model", str(chat_model_dir), "--data", str(data), "-n", "2"]
    args += ["--samples", "2", "--max-new-tokens", "3", "--device", "cpu", "-o", str(out)]
    result = runner.invoke(_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "gsm8k.jsonl:4" in result.output  # the malformed line is reported, not hidden
    summary = json.loads((out / "one_step.json").read_text())
    assert {s["prompt"] for s in summary["per_sequence"]} == {0, 1}
    page = (out / "tokens.html").read_text()
    assert "&lt;|im_start|&gt;user" in page and "What is 0 + 2?" in page  # chat template applied

    bad = runner.invoke(_app(), ["analyze", "--advantage-sign", "2", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--advantage-sign" in bad.output


def test_embedded_model_first_order_r_at_the_default_step() -> None:
    # Acceptance (issue 6): r >= 0.99 between first-order and actual per-sequence ΔH at a small
    # step on the embedded model (measured 0.99999 or more over seeds 0-9 at 8 × 4 samples).
    from entropy_dynamics.models import default_model_path
    from entropy_dynamics.models.loading import load_model_and_tokenizer
    from entropy_dynamics.tasks import build_task
    from entropy_dynamics.training.config import TaskConfig

    model, tokenizer = load_model_and_tokenizer(default_model_path(), "float32", "cpu")
    task = build_task(TaskConfig())
    problems = task.eval_problems()[:4]

    def scorer(index: int, completion: str) -> float:
        return task.score(problems[index], completion).reward

    prompts = [task.prompt(p) for p in problems]
    result = analyze(
        model, tokenizer, prompts, num_samples=4, max_new_tokens=24, scorer=scorer, seed=0
    )
    assert result.one_step.lr == DEFAULT_LR
    assert result.one_step.r_first_order >= 0.99
    assert result.one_step.first_order_rel_error < 0.05
    assert result.one_step.r_forecast >= 0.99  # parameter space, taken before the step


def test_padded_vocabulary_rows_are_no_tokens(chat_model_dir) -> None:
    # Reference: softmax over the tokenizer's rows only (the padded lm_head rows are not tokens).
    from entropy_dynamics.models.loading import load_model_and_tokenizer
    from entropy_dynamics.training.prompts import chat_prompt

    model, tokenizer = load_model_and_tokenizer(chat_model_dir, "float32", "cpu")
    vocab = len(tokenizer)
    assert model.get_output_embeddings().out_features > vocab
    torch.manual_seed(0)
    prompts = [chat_prompt(tokenizer, "What is 3 + 4?")]
    rollout = generate(model, tokenizer, prompts, num_samples=2, max_new_tokens=4)
    rows = token_table(model, tokenizer, rollout)
    p, h = _entropy_by_hand(_reference_logits(model, rollout)[..., :vocab])
    for row in rows:
        i, t = row["sample"], row["position"]
        assert row["p_k"] == pytest.approx(p[i, t, row["token_id"]].item(), rel=1e-5)
        assert row["entropy"] == pytest.approx(h[i, t].item(), abs=1e-5)
    # near-maximal entropy of random weights: first order holds to 0.4 % at lr 1e-5 (measured;
    # 4 % at 1e-4, the same in float64, so it is the second-order term, not rounding)
    result = one_step_check(model, rollout, 1.0, lr=1e-5, valid_vocab=vocab)
    assert result.first_order_rel_error < 0.02


def test_forecast_view_before_the_step(tiny_lm, rollout) -> None:
    # float64 copy, small SGD step: the parameter-space forecast, taken before the step, must
    # match each sequence's measured ΔH to first order; its token groups explain all of it (plain
    # SGD has no momentum or decay) and its overall value is the token-weighted sequence mean.
    model, _ = tiny_lm
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    result = one_step_check(model, rollout, advantages, lr=1e-4, dtype=torch.float64)
    rel = (result.forecast - result.actual).norm() / result.actual.norm()
    assert rel < 0.01 and result.r_forecast > 0.999
    weights = result.num_tokens.double() / result.num_tokens.sum()
    assert result.forecast_overall == pytest.approx(float((weights * result.forecast).sum()))
    groups = result.forecast_groups
    assert abs(groups.pop("other")) < 1e-6 * abs(result.forecast_overall)
    assert sum(groups.values()) == pytest.approx(result.forecast_overall, rel=1e-6)
    summary = result.to_dict()
    assert summary["forecast"]["pearson_r_per_sequence"] == pytest.approx(result.r_forecast)
    assert "delta_h_forecast" in summary["per_sequence"][0]

    without = one_step_check(model, rollout, advantages, lr=1e-3, forecast=False)
    assert without.forecast is None and without.to_dict()["forecast"] is None
    assert torch.equal(without.actual, one_step_check(model, rollout, advantages, lr=1e-3).actual)
