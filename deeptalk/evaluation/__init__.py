"""Evaluation: metrics of a trained speech LM, quality gates, reports, and the paper's comparison.

- ``text_ability``: text-only QA accuracy and perplexity vs the original LLM → relative drop % (definition in
  its docstring); ``evaluate_text_ability`` and the ``text_qa_score`` baseline hook for text_pretrain.
- ``spoken_qa``, ``asr_eval``, ``tts_eval``, ``latency``: speech metrics through the service's ``Engine``.
- ``heldout``: the held-out items; ``suite.evaluate_model``: all of the above for one model.
- ``gates``: ``check_gates`` → ``GateVerdict``, ``GateFailed``, ``reports/gate.json``; thresholds per
  profile in ``config.GateThresholds``.
- ``service_check``: ``judge_service`` scores a served model's answers to held-out spoken questions (the
  ``make run`` check in ``flows/smoke.py``) against the same gates.
- ``report``: self-contained HTML; ``training_logs``: loss curves and expert loads from training logs.
- the comparison's statistics (``comparison_stats``) and report (``comparison_report``); its workspaces and units
  run in ``flows.comparison`` (``python -m flows compare``).
- ``asr_scorer``: the offline Whisper scorer and WER (codec package's helper).
"""
