"""The language_model task: see task.py (the ``base.Task`` protocol), config.py and model.py."""
