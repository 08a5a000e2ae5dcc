"""The method table (methods.py): one entry per method is all a method needs — the config accepts
it, ``entropy-dynamics methods`` and the ``--method`` help show it, its loss and controller are
built from it; the effective options; the loss config resolved once per config."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.control import Controller, Entropic, EntropyTarget
from entropy_dynamics.losses import PolicyLossConfig, PolicyLossInputs, compute_policy_loss
from entropy_dynamics.methods import (
    METHODS,
    TABLE,
    Method,
    available_methods,
    build_controller,
    check_control,
    closed_loop_methods,
    controlled_loss,
    effective_options,
    get_method,
    register_method,
    resolve_method,
)
from entropy_dynamics.stats import token_stats
from entropy_dynamics.training.config import load_config

TOY = "_toy_top_half"


@pytest.fixture
def toy_method():
    """A toy method added the way every method is: one entry (removed again afterwards)."""
    # --- the whole of a new method: one entry ------------------------------------------------
    register_method(
        Method(
            TOY,
            "train only the top half of tokens by entropy (a toy: high_entropy with rho 0.5)",
            {"filter": "high_entropy", "filter_options": {"rho": 0.5}},
        )
    )
    # ------------------------------------------------------------------------------------------
    yield METHODS[TOY]
    del METHODS[TOY]


def test_a_new_method_is_one_entry(toy_method) -> None:
    # the config accepts it and resolves its loss config
    config = load_config(None, [f"algorithm.method={TOY}", "steps=2"])
    loss = config.algorithm.policy_loss()
    assert loss.filter == "high_entropy" and loss.filter_options == {"rho": 0.5}
    assert TOY in available_methods() and config.run_name == f"{TOY}-seed0"
    # `entropy-dynamics methods` shows it with its one line and its options
    shown = CliRunner().invoke(app, ["methods", TOY], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert TOY in shown.output and "top half of tokens" in shown.output
    assert "filter: rho=0.5" in shown.output
    listed = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert all(name in listed.output for name in METHODS)
    # the --method help of train and the --methods help of compare list it
    for command in ("train", "compare"):
        helped = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
        assert helped.exit_code == 0 and TOY in helped.output, command
    # it trains: its loss drops tokens and backpropagates; it has no controller options
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, generator=gen, requires_grad=True)
    tokens = torch.randint(0, 9, (2, 6), generator=gen)
    mask = torch.ones(2, 6, dtype=torch.bool)
    stats = token_stats(logits, tokens)
    adv = torch.tensor([[1.0], [-1.0]]).expand(2, 6)
    out = compute_policy_loss(loss, PolicyLossInputs(stats.logprobs, stats.logprobs.detach(),
                                                     adv, mask, stats))  # fmt: skip
    out.loss.backward()
    assert out.metrics["high_entropy/frac_kept"] == pytest.approx(0.5)
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert type(build_controller(TOY, {}, loss, 2)) is Controller
    with pytest.raises(ValueError, match="has no controller options"):
        load_config(None, [f"algorithm.method={TOY}", "algorithm.control={target: 1}"])


def test_an_entry_is_checked_when_it_is_registered() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_method(Method("grpo", "again"))
    with pytest.raises(ValueError, match="unknown loss option 'eps'"):
        register_method(Method("_bad", "a typo", {"eps": 0.1}))
    with pytest.raises(ValueError, match="no option 'muu'"):
        register_method(Method("_bad", "typo", {"filter": "clip_b", "filter_options": {"muu": 1}}))
    with pytest.raises(ValueError, match="Controller subclass"):
        register_method(Method("_bad", "not a controller", {}, dict))
    assert "_bad" not in METHODS


def test_the_table_is_the_registry() -> None:
    assert [m.name for m in TABLE] == list(METHODS)[: len(TABLE)]
    assert closed_loop_methods() == ["adaptive_entropy", "entropic", "entropy_target"]
    assert get_method("entropy_target").controller is EntropyTarget
    assert get_method("entropic").controller is Entropic
    assert all(m.summary and "\n" not in m.summary for m in TABLE)
    with pytest.raises(ValueError, match=r"unknown 'nope'; available: .*adaptive_entropy, clip_b"):
        get_method("nope")
    with pytest.raises(TypeError):
        METHODS["clip_b"].loss["filter"] = "none"  # an entry is read-only


def test_a_loss_only_closed_loop_methods_use_needs_their_controller() -> None:
    assert controlled_loss("entropic") == "entropic"
    assert controlled_loss("ppo") is None and controlled_loss("kl_cov") is None


def test_effective_options_are_the_defaults_with_the_given_on_top() -> None:
    clip_v = effective_options("clip_v")
    assert clip_v["loss"] == {"filter": "clip_v"}
    assert clip_v["filter"] == {"mu": 8.5, "max_frac": 1e-4, "mu_plus": None, "mu_minus": None}
    assert clip_v["control"] == {}
    entropic = effective_options("entropic", control={"kp": 2.0})
    assert entropic["control"] == {"target": None, "kp": 2.0, "ki": 0.01}
    higher = effective_options("clip_higher", resolve_method("clip_higher", eps_low=0.1))
    assert higher == {"loss": {"eps_low": 0.1, "eps_high": 0.28}, "filter": {}, "control": {}}
    with pytest.raises(ValueError, match="no option 'kd'"):
        effective_options("entropic", control={"kd": 1.0})


def test_check_control_runs_the_first_step_of_the_controller() -> None:
    base = resolve_method("entropy_target")
    check_control("entropy_target", {"target": 0.5}, base, 10)
    with pytest.raises(ValueError, match="needs target_final"):
        check_control("entropy_target", {"schedule": "linear"}, base, 10)


def test_the_loss_config_is_resolved_once_per_config() -> None:
    config = load_config(None, ["algorithm.method=clip_b", "algorithm.loss.eps_high=0.3"])
    algorithm = config.algorithm
    first = algorithm.policy_loss()
    assert algorithm.policy_loss() is first  # cached on the instance, not rebuilt
    assert "_policy_loss" not in {f for f in vars(type(algorithm)).get("__dataclass_fields__")}
    algorithm.loss["eps_high"] = 0.25  # a changed override is resolved again
    assert algorithm.policy_loss().eps_high == 0.25
    algorithm.method = "grpo"
    assert algorithm.policy_loss() == PolicyLossConfig(eps_high=0.25)
