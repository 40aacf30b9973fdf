"""Test-wide settings: one torch thread (the CI box has 2 shared cores), offline hubs, quiet Prefect."""

import os

os.environ.setdefault("DEEPTALK_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["DEEPTALK_THREADS"]))
