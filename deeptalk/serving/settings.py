"""The service settings a packaged model is served with: the ones stored by the package step, then env overrides.

``package.json`` holds ``ServiceConfig.to_dict()`` from packaging time; ``$DEEPTALK_SERVICE`` (JSON object)
overrides single fields at serve time, e.g. ``{"max_concurrency": 4}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from deeptalk.inference.config import ServiceConfig
from deeptalk.inference.engine import META_FILE


def service_config_for(package_dir: str | Path) -> ServiceConfig:
    path = Path(package_dir) / META_FILE
    meta = json.loads(path.read_text()) if path.exists() else {}
    data = dict(meta.get("service") or ServiceConfig.for_profile(meta.get("profile", "tiny")).to_dict())
    override = os.environ.get("DEEPTALK_SERVICE")
    if override:
        try:
            extra = json.loads(override)
        except json.JSONDecodeError as err:
            raise ValueError(f"$DEEPTALK_SERVICE is not valid JSON: {err}") from err
        if not isinstance(extra, dict):
            raise ValueError("$DEEPTALK_SERVICE must be a JSON object")
        if isinstance(extra.get("sampling"), dict):
            extra["sampling"] = {**data.get("sampling", {}), **extra["sampling"]}
        data.update(extra)
    return ServiceConfig.from_dict(data)
