"""The trainer: GRPO on one machine, instrumented for entropy dynamics.

What lives here: the typed config and its YAML / ``key=value`` I/O (``config``, ``config_io``), the
trainer's loop (``trainer``: rollout → reward → advantages → filter → PPO updates → dynamics;
what a step measures beside its loss, ``step_metrics``),
sampling with per-step log-probs (``rollout``), the teacher-forced forward that yields
``TokenStats`` fused from hidden states where the model allows it (``forward``, over the
teacher-forced passes of ``teacher_forcing``, which run each distinct prompt once; sampling's
decoding loop, ``sampler``, prefills each once, ``prompt_cache``, and drops rows that have
ended), chat-template
prompts (``prompts``), Avg@k / Pass@k (``evaluate``), checkpoints (``checkpoint``), metric
sinks (``metrics``), supervised pretraining of the embedded model (``pretrain``), the forecast of
each step's entropy change (``forecast``), whether the token filter is doing anything
(``filter_activity``), and what keeps runs safe: run directories that are never overwritten
(``run_dir``), one process per run directory (``run_lock``), clean stops on SIGINT / SIGTERM
(``interrupts``), guards against non-finite updates (``guards``), the resumable data position
(``cursor``) and seeded side streams that leave training's random stream alone (``randomness``).

Also here: one run's setup, built once for the trainer, ``train --dry-run``, the evaluations,
``analyze`` and ``filter-data`` (``setup``: model, tokenizer, prompted task, valid vocabulary,
statistics, problems); the gradient of one optimizer step, accumulated over micro-batches, shared
by the trainer and the one-step check (``update``); option dataclasses documented by their fields'
docstrings, with flags and bounds declared once (``option_fields``).

Imports: the mathematics (the top-level modules and ``filters``, ``losses``, ``control``, where the
closed-loop methods' controllers live, and ``methods``), ``kernels``, ``models``, ``tasks`` and
this room; never ``study`` or ``cli``.
"""

__all__: list[str] = []  # a room of modules: import the module that holds the name
