"""Reading and loading exports (inference.py): the newest complete version, metadata without
TensorFlow, and one ExportError vocabulary (the folder first, then what is wrong and what to do)
for every way an export folder can be unusable, in predict and in the server alike.

The SavedModels here are a one-signature ``tf.Module`` (seconds to write), not trained models:
the trained exports' predict/evaluate are tests/test_task_contract.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_rnn import inference
from nlp_rnn.errors import ExportError
from nlp_rnn.inference import COMPLETE_VERSION, METADATA_FILE


def write_parts(version_dir: Path, parts=COMPLETE_VERSION, metadata: str | None = None) -> Path:
    """Empty files at ``parts`` (the metadata file holds ``metadata`` if given)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        (version_dir / part).parent.mkdir(parents=True, exist_ok=True)
        (version_dir / part).write_text(metadata if part == METADATA_FILE and metadata else "")
    return version_dir


def assert_export_error(excinfo, folder, *words: str) -> None:
    """One line: the folder, then the problem, then "; " and what to do."""
    message = str(excinfo.value)
    assert message.startswith(f"{folder}: ") and "\n" not in message, message
    assert excinfo.value.remedy and message.endswith(f"; {excinfo.value.remedy}"), message
    for word in words:
        assert word in message, message


def test_newest_complete_version_is_resolved(tmp_path):
    root = tmp_path / "clf"
    write_parts(root / "1")
    write_parts(root / "2", ())
    write_parts(root / "3", ("saved_model.pb",))
    assert inference.versions(root) == [1, 2, 3]
    assert inference.resolve_model_dir(str(root)) == root / "1"
    assert inference.resolve_model_dir(str(root / "3")) == root / "3"  # a version given: as is


@pytest.mark.parametrize(
    "make, folder, words",
    [
        (lambda p: None, "m", ["not a SavedModel (no such folder)", "saved_models/NAME"]),
        (lambda p: p.write_text(""), "m", ["not a SavedModel (a file)"]),
        (lambda p: p.mkdir(), "m", ["not a SavedModel (no saved_model.pb, no version folders)"]),
        (
            lambda p: write_parts(p / "1", ("saved_model.pb",)),
            "m/1",
            [
                "an empty or partly copied version folder",
                "variables/variables.index",
                "finish copying",
            ],
        ),
        (
            lambda p: write_parts(p / "1", COMPLETE_VERSION[:2]),
            "m/1",
            ["not exported by nlp-rnn (missing assets.extra/nlp_rnn.json)", "no version of"],
        ),
    ],
    ids=["missing", "a file", "empty", "partly copied", "not nlp-rnn's"],
)
def test_an_unusable_folder_is_one_export_error(tmp_path, make, folder, words):
    make(tmp_path / "m")
    with pytest.raises(ExportError) as excinfo:
        inference.exported_metadata(str(tmp_path / "m"))
    assert_export_error(excinfo, tmp_path / folder, *words)


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"task": "classification", ', "invalid JSON (Expecting"),
        ("[1, 2]", "expected a JSON object"),
        ('{"labels": []}', "no 'task' key"),
        ("[" * 100_000, "invalid JSON"),
        (None, "invalid UTF-8 at byte 0"),
    ],
    ids=["torn", "not an object", "no task", "nested", "not UTF-8"],
)
def test_damaged_metadata_is_an_export_error(tmp_path, text, words):
    version = write_parts(tmp_path / "m" / "1")
    (version / METADATA_FILE).write_bytes(b"\xff{}" if text is None else text.encode())
    with pytest.raises(ExportError) as excinfo:
        inference.exported_metadata(str(tmp_path / "m"))
    assert_export_error(excinfo, version, f"damaged {METADATA_FILE}: {words}", "re-export")


def test_a_key_the_metadata_lacks_and_an_unknown_task_name_the_folder(tmp_path):
    version = write_parts(tmp_path / "m" / "1", metadata=json.dumps({"task": "poetry"}))
    folder, metadata = inference.exported_metadata(str(tmp_path / "m"))
    assert folder == version and metadata["task"] == "poetry"
    with pytest.raises(ExportError) as excinfo:
        metadata["labels"]
    assert_export_error(excinfo, version, "no 'labels' key")
    with pytest.raises(ExportError) as excinfo:
        inference.task_of(metadata)
    assert_export_error(excinfo, version, "task 'poetry'", "classification")


def test_reading_exports_needs_no_tensorflow(tmp_path):
    write_parts(tmp_path / "m" / "1", metadata='{"task": "classification"}')
    code = (
        "import sys; from nlp_rnn import inference; "
        f"inference.exported_metadata({str(tmp_path / 'm')!r}); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- loading (a tiny real SavedModel) ----------------------------------------------------------


@pytest.fixture(scope="module")
def echo_export(tmp_path_factory) -> Path:
    """saved_models/echo/1: ``serving_default`` (text [B] string -> length [B] int32)."""
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            return {"length": tf.strings.length(text)}

    version = tmp_path_factory.mktemp("saved_models") / "echo" / "1"
    echo = Echo()
    tf.saved_model.save(echo, str(version), signatures={"serving_default": echo.serve})
    write_parts(version, (METADATA_FILE,), metadata='{"task": "echo"}')
    return version


def test_a_loaded_export_calls_its_signatures_and_names_a_missing_one(echo_export):
    import tensorflow as tf

    export = inference.load_export(echo_export)
    assert export.metadata["task"] == "echo" and list(export.signatures) == ["serving_default"]
    assert export.signature()(text=tf.constant(["ab", ""]))["length"].numpy().tolist() == [2, 0]
    with pytest.raises(ExportError) as excinfo:
        export.signature("translate")
    assert_export_error(
        excinfo, echo_export, "no 'translate' signature (it has: serving_default)", "re-export"
    )


@pytest.fixture
def broken_copy(echo_export, tmp_path) -> Path:
    """A copy of the echo export whose saved_model.pb is not one."""
    import shutil

    copy = tmp_path / "echo" / "1"
    shutil.copytree(echo_export, copy)
    (copy / "saved_model.pb").write_bytes(b"not a SavedModel")
    return copy


def test_a_damaged_saved_model_is_an_export_error_with_tensorflows_cause(broken_copy):
    with pytest.raises(ExportError) as excinfo:
        inference.load_export(broken_copy)
    assert_export_error(
        excinfo, broken_copy, "damaged SavedModel, cannot load it (", "older version folder"
    )
    assert excinfo.value.__cause__ is not None


def test_the_server_reports_a_version_it_cannot_load_in_the_same_words(broken_copy):
    from nlp_rnn.serve.registry import Model

    model = Model("echo", broken_copy.parent)
    model.refresh(settle=False)
    assert model.current is None and model.status[1].state == "END"
    with pytest.raises(ExportError) as excinfo:
        inference.load_export(broken_copy)
    assert model.status[1].error == str(excinfo.value)
