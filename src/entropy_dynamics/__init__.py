"""entropy-dynamics: entropy dynamics and entropy control in reinforcement fine-tuning of LLMs.

Implements *On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models*
(arXiv 2602.03392): the entropy discriminator, first-order entropy-change predictions, the Clip_B
and Clip_V token filters, and a registry of policy losses.

The paper's mathematics sits at the top, each part importing only torch and
:mod:`~entropy_dynamics.kernels` (and the parts listed before it): ``theory`` (every formula on
logits), ``stats`` (``TokenStats`` for a batch, memory-bounded), ``advantages``, ``aggregation``
(the four loss-aggregation modes), ``dynamics`` (actual vs predicted ΔH of an update), and the
packages ``filters`` (the token masks: Clip_B, Clip_V, the baselines, ``entropy_target``),
``losses`` (the policy-loss registry, its shared tail, the per-token formulas, the fused entry)
and ``control`` (steering the entropy to a target: target schedules, the Skywork-OR1 and EntroPIC
rules, the closed-loop controllers), then ``methods`` (the one table of methods: name, loss
preset, controller). The machinery lives in rooms, each importing only the rooms listed before
it: ``kernels`` (streaming statistics, Triton), ``models`` and ``tasks``, ``training`` (the
trainer), ``study`` (experiments and reports), ``integrations`` (TRL, verl), ``cli`` (the
``entropy-dynamics`` command). ``errors`` holds the exception types every room shares, ``finite``
the check that every float option is a finite number.
"""

from entropy_dynamics import theory
from entropy_dynamics.stats import TokenStats, token_stats

__version__ = "0.1.0"
__all__ = ["TokenStats", "__version__", "theory", "token_stats"]
