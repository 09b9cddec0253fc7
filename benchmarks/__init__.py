"""Benchmarks for nlp-rnn: ``python -m benchmarks [--quick]``.

Sections (see each module's docstring for exactly what it measures):

* ``training``: nlp-rnn's ``pipelines/imdb.yaml`` vs a keras-io BiLSTM reference on IMDB;
* ``pipeline``: the tf.data input pipeline alone vs the rate the model consumes batches;
* ``inference``: each exported SavedModel vs the same model in memory;
* ``scaling``: vocabulary adaptation + one epoch at 1×, 2×, 4× the data (time, peak memory).

Results are printed as tables and written as BENCHMARKS.md-ready markdown (plus JSON).
"""
