"""nlp-rnn: train, evaluate and export recurrent NLP models (Keras 3 on TensorFlow).

Importing this package must stay cheap: TensorFlow is imported lazily by the modules that
need it, so `nlp-rnn --help` and config validation never load it.
"""

__version__ = "0.1.0"
