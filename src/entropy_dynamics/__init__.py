"""entropy-dynamics: entropy dynamics and entropy control in reinforcement fine-tuning of LLMs.

Implements *On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models*
(arXiv 2602.03392): the entropy discriminator, first-order entropy-change predictions, the Clip_B
and Clip_V token filters, and a registry of policy losses.
"""

from entropy_dynamics import theory
from entropy_dynamics.stats import TokenStats, token_stats

__version__ = "0.1.0"
__all__ = ["TokenStats", "__version__", "theory", "token_stats"]
