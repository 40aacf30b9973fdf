"""BentoML service: loads the packaged DeepTalk model at startup, warms it up, serves the routes.

Routes live in ``deeptalk.serving`` (``http``, ``realtime``; FastAPI, mounted at the root): ``POST /chat``,
``/asr``, ``/tts``, WebSocket ``/realtime`` (and ``/v1/realtime``), ``GET /voices``, ``/info``, ``/demo`` (browser
page), ``/openapi.json``. BentoML adds ``/livez``, ``/readyz`` and ``/metrics`` (with the scheduler's and the
answers' metrics, ``deeptalk.serving.metrics``). ``/readyz`` turns ready only after load + warm-up. Each worker
runs one scheduler that decodes all its answers in one batch (``batching`` in the service settings).

    bentoml serve service:DeepTalk --host 127.0.0.1 --port 3000
    DEEPTALK_MODEL_TAG=deeptalk:<version>  # which packaged model (default deeptalk:latest)
    DEEPTALK_API_KEY=...                   # optional: require `Authorization: Bearer <key>`
    DEEPTALK_DEVICE=cuda                   # where the model runs: auto (default: CUDA when visible) | cpu | cuda[:N]
    DEEPTALK_WORKERS=2                     # worker processes (default 1); each gets free cores / workers torch
                                           # threads (/ max_concurrency more without batching; deeptalk.runtime)
"""

from __future__ import annotations

import os

# One BLAS thread: numpy's OpenBLAS spinning threads on shared cores made codec decoding ~7× slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import bentoml  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from deeptalk.serving.app import create_app
from deeptalk.serving.capacity import EngineHolder  # noqa: E402
from deeptalk.serving.metrics import service_metrics  # noqa: E402
from deeptalk.inference.engine import Engine  # noqa: E402
from deeptalk.serving.settings import service_config_for  # noqa: E402
from deeptalk.runtime import resolve_device, setup_threads  # noqa: E402

log = logging.getLogger("deeptalk.service")

MODEL_TAG = os.environ.get("DEEPTALK_MODEL_TAG", "deeptalk:latest")
WORKERS = int(os.environ.get("DEEPTALK_WORKERS", "1"))
holder = EngineHolder(metrics=service_metrics())  # engine set once in DeepTalk.__init__; read-only afterwards
app = create_app(holder, static_dir=Path(__file__).resolve().parent / "static")


@bentoml.service(name="deeptalk", traffic={"timeout": 300}, workers=WORKERS)
@bentoml.asgi_app(app, path="/")
class DeepTalk:
    """Speech-in, speech-out dialogue (DeepTalk, modality-specific MoE) with streaming answers."""

    packaged = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        root = Path(self.packaged.path)
        config = service_config_for(root)
        # batching: one scheduler thread per worker runs the model; else up to max_concurrency answer threads do
        threads = setup_threads(sharers=WORKERS * (1 if config.batching else config.max_concurrency))
        self._blas = threadpool_limits(limits=1, user_api="blas")  # in case numpy came before the env vars above
        device = resolve_device(os.environ.get("DEEPTALK_DEVICE", "auto"), "$DEEPTALK_DEVICE")
        engine = Engine.load(root, config, device=str(device))
        if config.batching:
            engine.start_scheduler(observer=holder.metrics)
        if config.warmup:
            log.info("warm-up took %.2f s", engine.warmup())
        holder.engine = engine
        log.info(
            "serving %s: %d voices, up to %d concurrent answers (%s), %d torch threads each",
            MODEL_TAG,
            len(engine.voices),
            config.max_concurrency,
            "one batch" if config.batching else "one decode loop each",
            threads,
        )

    def __is_ready__(self) -> bool:
        return holder.engine is not None
