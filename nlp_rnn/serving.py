"""Use an exported SavedModel: predict on raw text, evaluate on a labelled file.

Only ``tf.saved_model.load`` and the exported signatures are used here, exactly what TF Serving
would run; the Keras model is never rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from nlp_rnn.data import readers
from nlp_rnn.errors import UserError


def load_exported(model_dir: str):
    """(version folder, nlp-rnn metadata, ``serving_default`` signature) of an exported model."""
    from nlp_rnn.export import read_metadata, resolve_model_dir

    version_dir = resolve_model_dir(model_dir)  # fails fast, before TensorFlow loads
    metadata = read_metadata(version_dir)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    return version_dir, metadata, loaded.signatures["serving_default"]


def read_inputs(texts: list[str], input_file: str | None) -> list[str]:
    """Texts from the command line plus, if given, a .txt file (a line each) or .jsonl ("text")."""
    items = list(texts)
    if input_file:
        if input_file.endswith((".jsonl", ".jsonl.gz", ".json")):
            items.extend(text for text, _ in readers.read_jsonl(input_file, "text", None))
        else:
            items.extend(readers.read_lines(input_file))
    if not items:
        raise UserError("nothing to predict: give TEXT arguments or --input FILE")
    return items


def predict(model_dir: str, texts: list[str], batch_size: int = 256,
            generation: dict | None = None) -> list[dict]:
    """One JSON-ready dict per input text.

    Classification: {"text", "label", "probabilities": {label: p}}. Language model:
    {"prompt", "continuation"}; ``generation`` may override max_length, temperature, top_k.
    """
    _, metadata, signature = load_exported(model_dir)
    if metadata["task"] == "classification":
        run_batch = lambda batch: _classify(signature, metadata["labels"], batch)  # noqa: E731
    elif metadata["task"] == "language_model":
        options = {k: metadata[k] for k in ("max_length", "temperature", "top_k")}
        options.update({k: v for k, v in (generation or {}).items() if v is not None})
        run_batch = lambda batch: _generate(signature, options, batch)  # noqa: E731
    else:
        raise UserError(f"predict does not support task {metadata['task']!r}")
    return [result for start in range(0, len(texts), batch_size)
            for result in run_batch(texts[start:start + batch_size])]


def _generate(signature, options: dict, batch: list[str]) -> list[dict]:
    import tensorflow as tf

    out = signature(prompt=tf.constant(batch, dtype=tf.string),
                    max_length=tf.constant(options["max_length"], tf.int32),
                    temperature=tf.constant(options["temperature"], tf.float32),
                    top_k=tf.constant(options["top_k"], tf.int32))
    return [{"prompt": p, "continuation": c.decode("utf-8")}
            for p, c in zip(batch, out["continuation"].numpy())]


def _classify(signature, labels: list[str], batch: list[str]) -> list[dict]:
    import tensorflow as tf

    out = signature(text=tf.constant(batch, dtype=tf.string))
    return [{"text": text, "label": label.decode("utf-8"),
             "probabilities": {n: round(float(p), 6) for n, p in zip(labels, probs)}}
            for text, label, probs in zip(batch, out["label"].numpy(),
                                          out["probabilities"].numpy())]


def evaluate(model_dir: str, data: str, data_format: str = "auto", text_column: str | None = None,
             label_column: str | None = None) -> dict:
    """The task's metrics of an exported model on a labelled file (the same code a run uses)."""
    from nlp_rnn.data.sources import labelled_source
    from nlp_rnn.tasks import TASKS

    if not Path(data).exists() and not data.startswith(("tfds:", "builtin:")):
        raise UserError(f"{data}: file not found")  # before the model is loaded
    version_dir, metadata, classify = load_exported(model_dir)
    if metadata["task"] != "classification":
        raise UserError(f"evaluate supports classification models; {model_dir} is a "
                        f"{metadata['task']} model")
    task = TASKS[metadata["task"]]
    source = labelled_source(data, "dev", data_format,
                             text_column or metadata.get("text_column", "text"),
                             label_column or metadata.get("label_column", "label"))
    metrics = task.evaluate(classify, source.dataset(), metadata["labels"])
    return {"model": str(version_dir), "data": data, "task": metadata["task"],
            **{k: v for k, v in metrics.items() if k != "samples"}}
