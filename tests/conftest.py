"""Test-wide settings: one torch thread (the CI box has 2 shared cores), offline hubs, quiet Prefect."""

import os

os.environ.setdefault("DEEPTALK_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["DEEPTALK_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """``make test`` runs two pytest-xdist workers, ``--dist loadfile``: a file is one unit of work (its module
    fixtures are built once; the trained project's tests share tests/e2e/test_pipeline.py). The files with slow
    tests go first, so the workers finish together instead of one waiting on a late end-to-end test."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        slow = {item.path for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: item.path not in slow)  # stable: a file keeps its order
