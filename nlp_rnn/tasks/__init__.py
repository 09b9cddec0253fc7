"""The task registry: the one list of tasks.

A task is a package ``tasks/<task>/``: ``config.py`` (its TensorFlow-free pipeline class,
``PIPELINE``), ``model.py`` (its Keras models) and ``task.py`` (data, vectorizers, datasets,
callbacks, export endpoints, prediction formatting, evaluation from an export: the
``base.Task`` protocol). Adding a task is a new folder plus one line in ``REGISTRY``; the
contract test (tests/test_task_contract.py) then covers it.

``TASKS`` is loaded on first use, because the task modules import TensorFlow; the registry,
``pipeline_class`` and ``tasks.base`` import without it (config validation must stay fast).
"""

import importlib

# task name (a pipeline's ``task:``) -> its package under nlp_rnn.tasks; in this order the
# built-in default (`nlp-rnn run pipeline` with no file) runs each task's built-in pipeline
REGISTRY = {"classification": "classification", "tagging": "tagging",
            "translation": "translation", "language_model": "language_model"}


def pipeline_class(task: str):
    """The pydantic pipeline class of ``task`` (``tasks/<task>/config.py:PIPELINE``)."""
    return importlib.import_module(f"nlp_rnn.tasks.{REGISTRY[task]}.config").PIPELINE


def __getattr__(name: str):
    if name == "TASKS":
        loaded = {task: importlib.import_module(f"nlp_rnn.tasks.{package}.task")
                  for task, package in REGISTRY.items()}
        globals()["TASKS"] = loaded
        return loaded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
