"""The Prefect shells over the ``deeptalk`` library: the pipeline flow and the single-step flow (``pipeline``),
the comparison (``compare``, its workspaces and units in ``comparison``), their deployments (``deploy``,
``prefect.yaml``), ``make run``'s service check (``smoke``) and closing summary (``summary``), and the file
exchange between machines (``exchange``). What is current is decided by the state of record
(``deeptalk.steps.record``), shared with DVC, never by Prefect's result cache.

Orchestration only (which steps run, retries, workspaces, artifacts, gating); ``deeptalk`` never imports this
package. Packaged with the project, so a worker on another machine imports it from its installed copy, not from
a checkout's working directory. Commands: ``python -m flows {run,compare,ui}``.
"""
