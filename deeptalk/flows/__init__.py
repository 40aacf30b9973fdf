"""Prefect shells over :mod:`deeptalk.steps`: the pipeline flow and the single-step flow (``pipeline``), their
deployments (``deploy``) and ``make run``'s service check (``smoke``). What is current is decided by the state of
record (``deeptalk.steps.record``), shared with DVC, never by Prefect's result cache.

Orchestration only (retries, artifacts, gating); the library below never imports Prefect. Shipped in
the package, so ``python -m deeptalk run`` and a worker on another machine import it from the installed
``deeptalk``, not from a checkout's working directory.
"""
