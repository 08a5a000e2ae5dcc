"""Engine plug-ins: the library's statistics, filters and losses inside engines built to scale out.

What lives here: ``trl/`` — a ``GRPOTrainer`` subclass (:class:`~entropy_dynamics.integrations.trl.
EntropyGRPOTrainer`, with its options in ``trl.config`` and the decoder hook's records in
``trl.capture``) that computes ``TokenStats`` with ``E_p[S]`` from the decoder's final hidden
states and the ``lm_head``, decides a token filter's keep-mask on the whole generation batch and
removes the dropped tokens from TRL's loss and its denominators; ``verl/`` — a plug-in verl loads
in every process through its ``verl.plugins`` entry point, which adds the statistics to verl's
FSDP engine forward, narrows ``response_mask`` and ``loss_mask`` on the whole batch in verl's v1
PPO trainer and registers each of our policy losses as ``ed_<name>`` (those of closed-loop methods
refuse to run there). Each plug-in needs its engine, installed with its extra (``pip install
"entropy-dynamics[trl]"`` / ``[verl]``, in separate environments); this package itself imports
nothing.

Imports: the mathematics (the top-level modules, ``filters``, ``losses``, ``methods``) and this
room (``kernels`` too, were a plug-in to need it); the engine (``trl``, ``verl``) and their own
dependencies (``accelerate``, ``tensordict``, ``omegaconf``).
"""

__all__: list[str] = []
