"""The only writer of SavedModels: ``saved_models/<name>/<version>/`` in TF Serving's layout.

A model is written to a temporary folder beside its destination, reloaded and called once on
sample input, and only then renamed into place (an atomic rename on one file system), so an
interrupted or broken export never shows up as a version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from nlp_rnn.errors import UserError

METADATA_FILE = "assets.extra/nlp_rnn.json"  # TF Serving ignores assets.extra/


def versions(model_root: Path) -> list[int]:
    """Integer version folders under ``saved_models/<name>/``, ascending."""
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.name.isdigit() and p.is_dir())


def is_complete_version(version_dir: Path) -> bool:
    """Whether a version folder holds everything an export writes (graph, variables, metadata).

    An export renames a finished folder into place, so its versions are always complete; a
    version copied in by hand (``cp -r``) is not until the copy ends.
    """
    return ((version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
            and (version_dir / METADATA_FILE).is_file())


def export_saved_model(model, endpoints: dict, trackables: list, export_root: str,
                       name: str, sample_inputs: dict, metadata: dict) -> Path:
    """Write ``endpoints`` (tf.functions with input signatures) as a new SavedModel version.

    Args:
        trackables: layers holding lookup tables the endpoints use (vectorizers).
        sample_inputs: keyword arguments for one check call of ``serving_default``.
        metadata: JSON written to ``assets.extra/nlp_rnn.json`` (task, labels, ...).
    Returns:
        the version folder, e.g. ``saved_models/imdb/3``.
    """
    import keras

    model_root = Path(export_root) / name
    model_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=model_root))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for item in trackables:
            archive.track(item)
        for endpoint_name, fn in endpoints.items():
            archive.add_endpoint(endpoint_name, fn)
        archive.write_out(str(tmp), verbose=False)
        check_saved_model(tmp, sample_inputs)
        (tmp / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        while True:  # another export may take a version number between our look and rename
            target = model_root / str((versions(model_root) or [0])[-1] + 1)
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_saved_model(path: Path, sample_inputs: dict) -> dict:
    """Reload a SavedModel and call ``serving_default`` once; raise if it does not work."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    outputs = loaded.signatures["serving_default"](**sample_inputs)
    if not outputs:
        raise RuntimeError(f"exported model at {path} returned no outputs")
    return outputs


def resolve_model_dir(model_dir: str) -> Path:
    """A version folder, or the newest version when given ``saved_models/<name>``."""
    path = Path(model_dir)
    if (path / "saved_model.pb").exists():
        return path
    found = versions(path)
    if found:
        return path / str(found[-1])
    raise UserError(f"{model_dir}: not a SavedModel (no saved_model.pb, no version folders)")


def read_metadata(version_dir: Path) -> dict:
    meta = version_dir / METADATA_FILE
    if not meta.exists():
        raise UserError(f"{version_dir}: not exported by nlp-rnn (missing {METADATA_FILE})")
    return json.loads(meta.read_text())
