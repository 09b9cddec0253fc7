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


def task_of(metadata: dict):
    """The task module an export's metadata names (UserError if this version has none)."""
    from nlp_rnn.tasks import TASKS

    task = TASKS.get(metadata.get("task"))
    if task is None:
        raise UserError(f"the model's task {metadata.get('task')!r} is not one this version of "
                        f"nlp-rnn knows ({', '.join(TASKS)})")
    return task


def predict(model_dir: str, texts: list[str], batch_size: int = 256,
            generation: dict | None = None) -> list[dict]:
    """One JSON-ready dict per input text, as the model's task formats it.

    Classification: {"text", "label", "probabilities": {label: p}}. Tagging: {"text",
    "entities": [{"type", "text", "start", "end"}] (token offsets), "tokens", "tags"}. Language
    model: {"prompt", "continuation"}; ``generation`` may override max_length, temperature, top_k.
    Translation: the text and its translation; ``generation["beam_width"]`` overrides the
    exported width (1 = greedy). Options a task does not take (not in its ``PREDICT_OPTIONS``)
    are ignored.
    """
    version_dir, metadata = exported_metadata(model_dir)
    task = task_of(metadata)
    signature = load_signature(version_dir, task.PREDICT_SIGNATURE)
    options = {k: v for k, v in (generation or {}).items()
               if k in task.PREDICT_OPTIONS and v is not None}
    results = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        outputs = signature(**task.prediction_inputs(batch, metadata, options))
        results.extend(task.format_predictions(batch, {k: v.numpy() for k, v in outputs.items()},
                                               metadata))
    return results


def evaluate(model_dir: str, data: str, data_format: str = "auto", text_column: str | None = None,
             label_column: str | None = None) -> dict:
    """The task's metrics of an exported model on labelled data (the same code a run uses).

    Classifiers read (text, label) data; taggers read CoNLL/JSONL tagged sentences, with
    ``text_column``/``label_column`` as the CoNLL token/tag column numbers if given;
    translators read tab-separated sentence pairs, the two options naming the source and
    reference column numbers (default: those the model was trained with); language models
    read plain text and report its perplexity.
    """
    if not Path(data).exists() and not data.startswith(("tfds:", "builtin:")):
        raise UserError(f"{data}: file not found")  # before the model is loaded
    version_dir, metadata = exported_metadata(model_dir)
    task = task_of(metadata)
    loaded = {}

    def signature(name: str):
        if name not in loaded:
            loaded[name] = load_signature(version_dir, name)
        return loaded[name]

    metrics = task.evaluate_export(signature, metadata, data, data_format, text_column,
                                   label_column)
    return {"model": str(version_dir), "data": data, "task": metadata["task"],
            **{k: v for k, v in metrics.items() if k != "samples"}}
