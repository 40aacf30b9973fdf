"""The speech service's network side over :mod:`deeptalk.inference`: HTTP routes (``http``), the WebSocket
protocol (``realtime``), capacity (``capacity``), API keys (``auth``), request shapes (``schemas``, ``requests``,
``uploads``), errors (``errors``) and the FastAPI app that ``service.py`` mounts into BentoML (``app``).

Nothing in ``deeptalk.inference`` imports from here.
"""
