"""Engine plug-ins: the library's statistics, filters and losses inside engines built to scale out.

What lives here: ``trl`` — a ``GRPOTrainer`` subclass (:class:`~entropy_dynamics.integrations.trl.
EntropyGRPOTrainer`) that computes ``TokenStats`` with ``E_p[S]`` from the decoder's final hidden
states and the ``lm_head``, decides a token filter's keep-mask on the whole generation batch and
removes the dropped tokens from TRL's loss and its denominators. Each plug-in imports its engine
at module import, so it is importable only where its extra is installed (``pip install
"entropy-dynamics[trl]"``); this package itself imports nothing.

Imports: the top-level mathematics, ``kernels``, ``training.forward`` and this room; the engine
(``trl``) and its own dependencies (``accelerate``).
"""
