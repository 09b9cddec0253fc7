"""Task registry: ``TASKS`` maps a config's ``task`` name to its module (see ``base.Task``).

``TASKS`` is loaded on first use, because the task modules import TensorFlow; the protocol and
main-metric declaration in ``nlp_rnn.tasks.base`` import without it.
"""

import importlib

# name -> module under nlp_rnn.tasks; a new task adds one line here
REGISTRY = {"classification": "classification", "language_model": "language_model",
            "tagging": "tagging", "translation": "translation"}


def __getattr__(name: str):
    if name == "TASKS":
        tasks = {task: importlib.import_module(f"nlp_rnn.tasks.{module}")
                 for task, module in REGISTRY.items()}
        globals()["TASKS"] = tasks
        return tasks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
