"""Evaluation tasks: benchmarks a model is scored on, such as HellaSwag.

    base.py             the Task interface: examples, the text continuations to score, the metrics
    registry.py         task names (hellaswag, mc:PATH) -> loaded tasks; the names the config accepts
    scoring.py          scores continuations with a GPT, batched; evaluate_task runs a whole task
    multiple_choice.py  multiple-choice jsonl files in HellaSwag's shape, read as hostile input
    hellaswag.py        HellaSwag's validation set, downloaded once into the cache
    cache.py            the download cache (~/.cache/nash or NASH_CACHE_DIR)

A new task is one module with a class implementing `Task`, and one line in registry.py.
Nothing here imports the engine, the config or rich (progress arrives as callbacks).
"""
