"""Studies built on the trainer: experiments, checks of the paper's claims, reports.

What lives here: grids of runs (``experiments``), the evaluation of a named split (``evaluation``:
``eval.json`` and the runs' ``final_eval.json``), the paper's §4 sign intervention (``signs``),
per-token analysis of a model on data and the one-step predicted-vs-actual check (``analysis``,
``one_step``, ``analysis_html``), the paper's pass-rate data filter (``filter_data``), the
options of the ``analyze`` and ``filter-data`` commands (``command_options``), the numerical
check of Theorems 3.2 / 3.3 (``verification``), and reports: runs on disk as data (``runs``),
their summaries (``summaries``), the comparison report (``report``), its rendering
(``report_render``, which takes data and never imports its caller) and one run's plots
(``run_plots``).

Imports: everything below it (the mathematics, ``kernels``, ``models``, ``tasks``, ``training``)
and this room; never ``cli``.
"""

__all__: list[str] = []  # a room of modules: import the module that holds the name
