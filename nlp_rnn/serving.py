"""Use an exported SavedModel: predict on raw text, evaluate on a labelled file.

Only ``tf.saved_model.load`` and the exported signatures are used here, exactly what TF Serving
would run; the Keras model is never rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from nlp_rnn.data import readers
from nlp_rnn.errors import UserError


def exported_metadata(model_dir: str) -> tuple[Path, dict]:
    """(version folder, nlp-rnn metadata) of an exported model; no TensorFlow, fails fast."""
    from nlp_rnn.export import read_metadata, resolve_model_dir

    version_dir = resolve_model_dir(model_dir)
    return version_dir, read_metadata(version_dir)


def load_signature(version_dir: Path, name: str = "serving_default"):
    """One signature of the SavedModel in ``version_dir`` (the model is loaded once per call).

    Raises:
        UserError: the folder is damaged (a truncated variables file, a corrupt
            saved_model.pb, missing files) or lacks the signature, naming the folder.
    """
    import logging

    import tensorflow as tf

    absl = logging.getLogger("absl")
    level = absl.level
    # a damaged optional fingerprint.pb is logged with a traceback, and loading goes on
    absl.setLevel(logging.CRITICAL)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises IndexError, OpError, OSError, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{version_dir}: damaged SavedModel, cannot load it ({reason[:200]}); "
                        "re-export it, or pass an older version folder") from None
    finally:
        absl.setLevel(level)
    if name not in loaded.signatures:
        raise UserError(f"{version_dir}: the SavedModel has no {name!r} signature (it has: "
                        f"{', '.join(loaded.signatures) or 'none'})")
    return loaded.signatures[name]


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
    Translation: {"text", "translation"}; ``generation["beam_width"]`` overrides the exported
    width (1 = greedy).
    """
    version_dir, metadata = exported_metadata(model_dir)
    # translators are called through `translate`, which takes the beam width per call
    signature = load_signature(version_dir, "translate" if metadata["task"] == "translation"
                               else "serving_default")
    if metadata["task"] == "classification":
        run_batch = lambda batch: _classify(signature, metadata["labels"], batch)  # noqa: E731
    elif metadata["task"] == "tagging":
        run_batch = lambda batch: _tag(signature, batch)  # noqa: E731
    elif metadata["task"] == "translation":
        width = (generation or {}).get("beam_width") or metadata["beam_width"]
        run_batch = lambda batch: _translate(signature, width, metadata, batch)  # noqa: E731
    elif metadata["task"] == "language_model":
        options = {k: metadata[k] for k in ("max_length", "temperature", "top_k")}
        options.update({k: v for k, v in (generation or {}).items() if v is not None})
        run_batch = lambda batch: _generate(signature, options, batch)  # noqa: E731
    else:
        raise UserError(f"predict does not support task {metadata['task']!r}")
    return [result for start in range(0, len(texts), batch_size)
            for result in run_batch(texts[start:start + batch_size])]


def _translate(translate, beam_width: int, metadata: dict, batch: list[str]) -> list[dict]:
    import tensorflow as tf

    out = translate(text=tf.constant(batch, dtype=tf.string),
                    beam_width=tf.constant(beam_width, tf.int32),
                    length_penalty=tf.constant(metadata["length_penalty"], tf.float32))
    return [{"text": text, "translation": t.decode("utf-8")}
            for text, t in zip(batch, out["translation"].numpy())]


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
    ``text_column``/``label_column`` as the CoNLL token/tag column numbers if given;
    translators read tab-separated sentence pairs, the two options naming the source and
    reference column numbers (default: those the model was trained with).
    """
    from nlp_rnn.tasks import TASKS

    if not Path(data).exists() and not data.startswith(("tfds:", "builtin:")):
        raise UserError(f"{data}: file not found")  # before the model is loaded
    version_dir, metadata = exported_metadata(model_dir)
    task_name = metadata["task"]
    if task_name == "tagging":
        metrics = _evaluate_tagger(version_dir, metadata, data, data_format, text_column,
                                   label_column)
    elif task_name == "classification":
        from nlp_rnn.data.sources import labelled_source

        source = labelled_source(data, "dev", data_format,
                                 text_column or metadata.get("text_column", "text"),
                                 label_column or metadata.get("label_column", "label"),
                                 known=tuple(metadata["labels"]))
        metrics = TASKS["classification"].evaluate(load_signature(version_dir), source.dataset(),
                                                   metadata["labels"])
    elif task_name == "translation":
        metrics = _evaluate_translator(version_dir, metadata, data, data_format, text_column,
                                       label_column)
    else:
        raise UserError(f"evaluate supports classification, tagging and translation models; "
                        f"{model_dir} is a {task_name} model")
    return {"model": str(version_dir), "data": data, "task": task_name,
            **{k: v for k, v in metrics.items() if k != "samples"}}


def _column(value: str | None, default: int, option: str) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{option}: columns are numbers here (0 = first, -1 = last), got "
                        f"{value!r}") from None


def _evaluate_tagger(version_dir, metadata, data, data_format, token_column, tag_column) -> dict:
    from nlp_rnn.data.sources import tagged_source
    from nlp_rnn.tasks import tagging

    if data_format not in ("auto", "conll", "jsonl"):
        raise UserError(f"--format {data_format}: a tagger reads conll or jsonl data")
    source = tagged_source(data, "dev", data_format,
                           _column(token_column, metadata.get("token_column", 0), "--text-column"),
                           _column(tag_column, metadata.get("tag_column", -1), "--label-column"),
                           "auto", "iob2", known_types=tuple(metadata["entity_types"]))
    return tagging.evaluate(load_signature(version_dir, "tag_tokens"), source.sentences(), "iob2",
                            metadata["entity_types"])


def _evaluate_translator(version_dir, metadata, data, data_format, source_column,
                         target_column) -> dict:
    from nlp_rnn.data.sources import parallel_source
    from nlp_rnn.tasks import translation

    if data_format not in ("auto", "parallel", "tsv"):
        raise UserError(f"--format {data_format}: a translator reads parallel (tab-separated) "
                        "data")
    source = parallel_source(
        data, "dev", "tsv" if not data.startswith(("tfds:", "builtin:")) else "auto",
        _column(source_column, metadata.get("source_column", 1), "--text-column"),
        _column(target_column, metadata.get("target_column", 0), "--label-column"))
    sources, references = translation.read_pairs(source)
    return translation.evaluate(load_signature(version_dir, "translate"), sources, references, metadata["beam_width"],
                                metadata["length_penalty"])
