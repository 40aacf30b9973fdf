"""Step ``validate_data``: run the Great Expectations suites on ``cfg.paths.raw``.

Data Docs go to ``reports/data_docs/``. On success the summary is written (atomically) to
``cfg.paths.validated/summary.json``; on failure ``DataValidationError`` lists every failed expectation with
example rows and nothing under ``cfg.paths.validated`` is touched, so the last validated data stays intact.
"""

from __future__ import annotations

import logging

from deeptalk.data.validation import DataValidationError, validate, write_summary

log = logging.getLogger(__name__)

__all__ = ["run", "DataValidationError"]


def run(cfg) -> dict:
    result = validate(cfg)
    if not result.success:
        log.error("data validation failed; Data Docs: %s", result.docs_index)
        result.raise_on_failure()
    path = write_summary(result, cfg.paths.raw, cfg.paths.validated)
    log.info("data validated: %s", path)
    return {"validated": str(path), "docs": str(result.docs_index), **result.statistics}
