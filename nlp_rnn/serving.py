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

    Classification: {"text", "label", "probabilities": {label: p}}. Tagging: {"text",
    "entities": [{"type", "text", "start", "end"}] (token offsets), "tokens", "tags"}. Language
    model: {"prompt", "continuation"}; ``generation`` may override max_length, temperature, top_k.
    """
    _, metadata, signature = load_exported(model_dir)
    if metadata["task"] == "classification":
        run_batch = lambda batch: _classify(signature, metadata["labels"], batch)  # noqa: E731
    elif metadata["task"] == "tagging":
        run_batch = lambda batch: _tag(signature, batch)  # noqa: E731
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


def _tag(signature, batch: list[str]) -> list[dict]:
    import tensorflow as tf

    from nlp_rnn.tasks.tagging import entity_text

    out = signature(text=tf.constant(batch, dtype=tf.string))
    results = []
    for text, tokens, tags, n in zip(batch, out["tokens"].numpy(), out["tags"].numpy(),
                                     out["lengths"].numpy()):
        tokens = [t.decode("utf-8") for t in tokens[:n]]
        tags = [t.decode("utf-8") for t in tags[:n]]
        results.append({"text": text, "entities": entity_text(tokens, tags), "tokens": tokens,
                        "tags": tags})
    return results


def _classify(signature, labels: list[str], batch: list[str]) -> list[dict]:
    import tensorflow as tf

    out = signature(text=tf.constant(batch, dtype=tf.string))
    return [{"text": text, "label": label.decode("utf-8"),
             "probabilities": {n: round(float(p), 6) for n, p in zip(labels, probs)}}
            for text, label, probs in zip(batch, out["label"].numpy(),
                                          out["probabilities"].numpy())]


def evaluate(model_dir: str, data: str, data_format: str = "auto", text_column: str | None = None,
             label_column: str | None = None) -> dict:
    """The task's metrics of an exported model on labelled data (the same code a run uses).

    Classifiers read (text, label) data; taggers read CoNLL/JSONL tagged sentences, with
    ``text_column``/``label_column`` as the CoNLL token/tag column numbers if given.
    """
    from nlp_rnn.tasks import TASKS

    if not Path(data).exists() and not data.startswith(("tfds:", "builtin:")):
        raise UserError(f"{data}: file not found")  # before the model is loaded
    from nlp_rnn.export import read_metadata, resolve_model_dir

    task_name = read_metadata(resolve_model_dir(model_dir))["task"]
    if task_name == "tagging":
        metrics = _evaluate_tagger(model_dir, data, data_format, text_column, label_column)
    elif task_name == "classification":
        from nlp_rnn.data.sources import labelled_source

        version_dir, metadata, classify = load_exported(model_dir)
        source = labelled_source(data, "dev", data_format,
                                 text_column or metadata.get("text_column", "text"),
                                 label_column or metadata.get("label_column", "label"),
                                 known=tuple(metadata["labels"]))
        metrics = TASKS["classification"].evaluate(classify, source.dataset(), metadata["labels"])
    else:
        raise UserError(f"evaluate supports classification and tagging models; {model_dir} is "
                        f"a {task_name} model")
    return {"model": str(resolve_model_dir(model_dir)), "data": data, "task": task_name,
            **{k: v for k, v in metrics.items() if k != "samples"}}


def _column(value: str | None, default: int, option: str) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{option}: a tagger reads CoNLL columns by number (0 = first, -1 = "
                        f"last), got {value!r}") from None


def _evaluate_tagger(model_dir, data, data_format, token_column, tag_column) -> dict:
    from nlp_rnn.data.sources import tagged_source
    from nlp_rnn.tasks import tagging

    version_dir, metadata, _ = load_exported(model_dir)
    if data_format not in ("auto", "conll", "jsonl"):
        raise UserError(f"--format {data_format}: a tagger reads conll or jsonl data")
    source = tagged_source(data, "dev", data_format,
                           _column(token_column, metadata.get("token_column", 0), "--text-column"),
                           _column(tag_column, metadata.get("tag_column", -1), "--label-column"),
                           "auto", "iob2", known_types=tuple(metadata["entity_types"]))
    import tensorflow as tf

    tag_tokens = tf.saved_model.load(str(version_dir)).signatures["tag_tokens"]
    return tagging.evaluate(tag_tokens, source.sentences(), "iob2", metadata["entity_types"])
