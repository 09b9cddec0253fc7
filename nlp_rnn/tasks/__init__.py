"""Task registry. Importing this module imports TensorFlow (the task modules need it)."""

from nlp_rnn.tasks import classification

TASKS = {"classification": classification}
