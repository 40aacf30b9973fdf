"""Prefect shells over :mod:`deeptalk.steps`: the pipeline flow and the single-step flow (``pipeline``), their
deployments (``deploy``), the cache key (``hashing``) and ``make run``'s service check (``smoke``).

Orchestration only (retries, caching, artifacts, gating); the library below never imports Prefect. Shipped in
the package, so ``python -m deeptalk run`` and a worker on another machine import it from the installed
``deeptalk``, not from a checkout's working directory.
"""
