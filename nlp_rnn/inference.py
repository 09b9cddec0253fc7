"""Reading and calling exports: the one place that finds, checks and loads a SavedModel version.

An export is ``saved_models/<name>/<version>/`` in TF Serving's layout, written only by
``export.py``, with nlp-rnn's facts about it (task, labels, ...) in ``METADATA_FILE``. Here:

* finding the version to use (``resolve_model_dir``) and reading its metadata
  (``read_metadata``) without TensorFlow, so a wrong folder fails before TensorFlow loads;
* loading the SavedModel (``load_export``) and getting its signatures, exactly what TF Serving
  would run: the Keras model is never rebuilt;
* ``predict`` and ``evaluate``, which call those signatures through the export's task module.

``nlp-rnn predict``/``evaluate`` and the server's registry (``serve/registry.py``) all use this
module. Everything wrong with an export folder is one ``ExportError``, whose message starts with
the folder and says what is wrong and what to do.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from nlp_rnn.errors import ExportError, UserError

METADATA_FILE = "assets.extra/nlp_rnn.json"
# the metadata flag of an export whose graph holds tensorflow-text ops (data/tokenizers.py)
TENSORFLOW_TEXT_KEY = "requires_tensorflow_text"  # TF Serving ignores assets.extra/
# what a version folder holds once its rename made it visible; a folder without them is
# empty or half-copied by hand (an rsync in progress) and never the one `predict NAME` picks
COMPLETE_VERSION = ("saved_model.pb", "variables/variables.index", METADATA_FILE)
_GIVE_AN_EXPORT = "give an export's folder saved_models/NAME, or one version saved_models/NAME/N"
_REEXPORT = "re-export the model"


# ---- finding a version and its metadata (no TensorFlow) ----------------------------------------


def versions(model_root: Path) -> list[int]:
    """Integer version folders under ``saved_models/<name>/``, ascending."""
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.name.isdigit() and p.is_dir())


def is_complete_version(version_dir: Path) -> bool:
    """Whether a version folder holds everything an export writes (``COMPLETE_VERSION``).

    An export renames a finished folder into place, so its versions are always complete; a
    version copied in by hand (``cp -r``) is not until the copy ends.
    """
    return all((version_dir / part).is_file() for part in COMPLETE_VERSION)


def resolve_model_dir(model_dir: str) -> Path:
    """A version folder, or the newest complete version when given ``saved_models/<name>``.

    Raises:
        ExportError: no such folder, no version in it, or no complete version.
    """
    path = Path(model_dir)
    if (path / "saved_model.pb").exists():
        return path
    if not path.is_dir():
        problem = "a file" if path.exists() else "no such folder"
        raise ExportError(model_dir, f"not a SavedModel ({problem})", _GIVE_AN_EXPORT)
    found = versions(path)
    complete = [v for v in found if is_complete_version(path / str(v))]
    if complete:
        return path / str(complete[-1])
    if found:  # name what the newest lacks: "not exported by nlp-rnn" or "copied in part"
        newest = path / str(found[-1])
        lacking = [part for part in COMPLETE_VERSION if not (newest / part).is_file()]
        what = ("not exported by nlp-rnn" if lacking == [METADATA_FILE] else
                "an empty or partly copied version folder")
        raise ExportError(newest, f"{what} (missing {', '.join(lacking)}); no version of "
                          f"{model_dir} is complete", f"finish copying it, or {_REEXPORT}")
    raise ExportError(model_dir, "not a SavedModel (no saved_model.pb, no version folders)",
                      _GIVE_AN_EXPORT)


class ExportMetadata(dict):
    """An export's ``nlp_rnn.json``; a key it lacks is an ExportError naming the folder (a
    damaged or hand-edited file), not a KeyError deep inside predict or evaluate."""

    def __init__(self, values: dict, version_dir: Path):
        super().__init__(values)
        self.version_dir = version_dir

    def __missing__(self, key):
        raise ExportError(self.version_dir, f"damaged {METADATA_FILE}: no {key!r} key",
                          _REEXPORT)


def read_metadata(version_dir: Path) -> ExportMetadata:
    """The nlp-rnn metadata of a version folder (no TensorFlow); damage is an ExportError."""
    meta = version_dir / METADATA_FILE
    if not meta.exists():
        raise ExportError(version_dir, f"not exported by nlp-rnn (missing {METADATA_FILE})",
                          "export it with `nlp-rnn run pipeline`")
    damaged = f"damaged {METADATA_FILE}"
    try:
        values = json.loads(meta.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        problem = f"{damaged}: invalid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
    except RecursionError:
        problem = f"{damaged}: invalid JSON (nested too deeply)"
    except UnicodeDecodeError as exc:
        problem = f"{damaged}: invalid UTF-8 at byte {exc.start}"
    else:
        if not isinstance(values, dict):
            problem = f"{damaged}: expected a JSON object"
        elif not isinstance(values.get("task"), str):
            problem = f"{damaged}: no 'task' key"
        else:
            return ExportMetadata(values, version_dir)
    raise ExportError(version_dir, problem, _REEXPORT)


def exported_metadata(model_dir: str) -> tuple[Path, ExportMetadata]:
    """(version folder, nlp-rnn metadata) of an exported model; no TensorFlow, fails fast."""
    version_dir = resolve_model_dir(model_dir)
    return version_dir, read_metadata(version_dir)


def task_of(metadata: ExportMetadata):
    """The task module an export's metadata names (ExportError if this nlp-rnn has none)."""
    from nlp_rnn.tasks import TASKS

    task = TASKS.get(metadata["task"])
    if task is None:
        raise ExportError(metadata.version_dir, f"exported for the task {metadata['task']!r}, "
                          f"which this version of nlp-rnn does not know ({', '.join(TASKS)})",
                          "use the nlp-rnn that exported it")
    return task


# ---- loading (TensorFlow) ----------------------------------------------------------------------

# absl's level is process-wide: two loads at once must not restore each other's quieting
_ABSL_LOCK = threading.Lock()


def load_saved_model(version_dir: Path):
    """``tf.saved_model.load(version_dir)``: the object whose ``signatures`` are the exported
    functions (keep it alive as long as they are called: it owns their variables).

    Raises:
        ExportError: the folder is damaged (a truncated variables file, a corrupt
            saved_model.pb, missing files); TensorFlow's exception is its ``__cause__``.
    """
    import logging

    import tensorflow as tf

    absl = logging.getLogger("absl")
    with _ABSL_LOCK:
        level = absl.level
        # a damaged optional fingerprint.pb is logged with a traceback, and loading goes on
        absl.setLevel(logging.CRITICAL)
        try:
            return tf.saved_model.load(str(version_dir))
        except Exception as exc:  # TensorFlow raises IndexError, OpError, OSError, ...
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(version_dir, f"damaged SavedModel, cannot load it "
                              f"({reason[:200]})", f"{_REEXPORT}, or pass an older version "
                              "folder") from exc
        finally:
            absl.setLevel(level)


def signature_of(saved_model, version_dir: Path, name: str = "serving_default"):
    """One signature (a ConcreteFunction) of a loaded SavedModel; ExportError if it has none
    of that name."""
    if name not in saved_model.signatures:
        raise ExportError(version_dir, f"the SavedModel has no {name!r} signature (it has: "
                          f"{', '.join(saved_model.signatures) or 'none'})",
                          f"{_REEXPORT} with this version of nlp-rnn")
    return saved_model.signatures[name]


@dataclass(frozen=True)
class LoadedExport:
    """A loaded version: its folder, nlp-rnn metadata and SavedModel (which keeps the
    signatures' variables alive)."""

    version_dir: Path
    metadata: ExportMetadata
    saved_model: object

    @property
    def signatures(self) -> dict:
        """Signature name -> ConcreteFunction (keyword tensors in, a dict of tensors out)."""
        return dict(self.saved_model.signatures)

    def signature(self, name: str = "serving_default"):
        return signature_of(self.saved_model, self.version_dir, name)


def load_export(version_dir: Path, metadata: ExportMetadata | None = None) -> LoadedExport:
    """Load one version folder: its metadata first (no TensorFlow: fails fast), then the
    SavedModel. Raises ExportError for anything wrong with the folder."""
    metadata = read_metadata(version_dir) if metadata is None else metadata
    if metadata.get(TENSORFLOW_TEXT_KEY):
        register_tensorflow_text(version_dir)
    return LoadedExport(version_dir, metadata, load_saved_model(version_dir))


def register_tensorflow_text(version_dir: Path) -> None:
    """Register tensorflow-text's custom ops (a SentencePiece tokenizer in the graph) before
    a SavedModel that uses them loads; only such exports pay for the import."""
    try:
        import tensorflow_text  # noqa: F401  (importing registers the ops)
    except ImportError:
        raise ExportError(version_dir, "the export tokenizes with tensorflow-text's "
                          "SentencePiece ops, and tensorflow-text is not installed",
                          "pip install tensorflow-text") from None


# ---- predict and evaluate ----------------------------------------------------------------------


def read_inputs(texts: list[str], input_file: str | None) -> list[str]:
    """Texts from the command line plus, if given, a .txt file (a line each) or .jsonl ("text")."""
    from nlp_rnn.data import readers

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
    export = load_export(version_dir, metadata)
    signature = export.signature(task.PREDICT_SIGNATURE)
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
    export = load_export(version_dir, metadata)
    metrics = task.evaluate_export(export.signature, metadata, data, data_format, text_column,
                                   label_column)
    return {"model": str(version_dir), "data": data, "task": metadata["task"],
            **{k: v for k, v in metrics.items() if k != "samples"}}
