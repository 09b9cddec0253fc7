"""Task registry. Importing this module imports TensorFlow (the task modules need it)."""

from nlp_rnn.tasks import classification, language_model, tagging, translation

TASKS = {"classification": classification, "language_model": language_model, "tagging": tagging,
         "translation": translation}
