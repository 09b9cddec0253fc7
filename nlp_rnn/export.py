"""The only writer of SavedModels: ``saved_models/<name>/<version>/`` in TF Serving's layout.

A model is written to a temporary folder beside its destination, reloaded and called once on
sample input, and only then renamed into place (an atomic rename on one file system), so an
interrupted or broken export never shows up as a version. Reading exports (finding a version,
its metadata, loading it) is ``inference.py``'s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from nlp_rnn import atomic, liveness
from nlp_rnn.errors import ExportError
from nlp_rnn.inference import METADATA_FILE, load_saved_model, versions

TMP_EXPORT = ".tmp-export-"
WRITER_FILE = ".writer.json"  # the writing process's liveness token, inside TMP_EXPORT folders


def export_saved_model(model, endpoints: dict, trackables: list, export_root: str,
                       name: str, sample_inputs: dict, metadata: dict, log=print) -> Path:
    """Write ``endpoints`` (tf.functions with input signatures) as a new SavedModel version.

    Args:
        trackables: layers holding lookup tables the endpoints use (vectorizers); the files
            one lists in an ``export_files`` attribute are copied into ``assets.extra/``.
        sample_inputs: keyword arguments for one check call of ``serving_default``.
        metadata: JSON written to ``assets.extra/nlp_rnn.json`` (task, labels, ...).
    Returns:
        the version folder, e.g. ``saved_models/imdb/3``.
    Raises:
        OSError(ENOSPC) naming the folder when the disk fills (TensorFlow would raise a
        ResourceExhaustedError with a traceback's worth of detail).
    """
    import keras
    import tensorflow as tf

    model_root = Path(export_root) / name
    model_root.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(model_root, log)
    # the writer's token inside (the pid in the name until it is written) tells a later
    # export whether this one is still alive
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_EXPORT}{os.getpid()}-", dir=model_root))
    try:
        atomic.write_text(tmp / WRITER_FILE, json.dumps(liveness.current_token()))
        archive = keras.export.ExportArchive()
        archive.track(model)
        for item in trackables:
            archive.track(item)
        for endpoint_name, fn in endpoints.items():
            archive.add_endpoint(endpoint_name, fn)
        archive.write_out(str(tmp), verbose=False)
        check_saved_model(tmp, sample_inputs)
        (tmp / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        for item in trackables:  # e.g. a SentencePiece .model file, for tools outside the graph
            for file in getattr(item, "export_files", ()):
                atomic.write_bytes(tmp / METADATA_FILE.rsplit("/", 1)[0] / file.name,
                                   file.read_bytes())
        # the checked call's inputs, as TF Serving's columnar request form takes them: a ready
        # example for clients, the demo page and the contract test
        metadata = {**metadata, "example_inputs": _as_json(sample_inputs)}
        atomic.write_text(tmp / METADATA_FILE, json.dumps(metadata, indent=2))
        atomic.make_private_dir_public(tmp)  # mkdtemp's 0700 would lock out a TF Serving user
        (tmp / WRITER_FILE).unlink()  # not part of the version; the pid in the name remains
        while True:  # another export may take a version number between our look and rename
            target = model_root / str((versions(model_root) or [0])[-1] + 1)
            try:
                os.rename(tmp, target)
                atomic.fsync_dir(model_root)
                return target
            except OSError:
                if not target.exists():
                    raise
    except (OSError, tf.errors.OpError) as exc:
        if atomic.is_disk_full(exc):
            raise atomic.disk_full(model_root) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _writer_gone(folder: Path) -> bool:
    """Whether the process that made a ``.tmp-export-<pid>-*`` folder has ended.

    Told by the writer's token inside (``liveness.token_gone``: a reused pid does not keep the
    folder alive). Without one (the writer's first and last moments, or an older nlp-rnn's
    folder) the pid in the name must belong to a process that was alive when the folder last
    changed; a name without a pid (older still) is stale.
    """
    try:
        return liveness.token_gone(json.loads((folder / WRITER_FILE).read_text()))
    except (OSError, ValueError):
        pass
    pid = folder.name[len(TMP_EXPORT):].partition("-")[0]
    if not pid.isdigit():
        return True
    try:
        changed = folder.stat().st_mtime
    except OSError:  # removed meanwhile
        return False
    return liveness.pid_gone(int(pid), active_at=changed)


def remove_stale_exports(model_root: Path, log=print) -> None:
    """Delete ``.tmp-export-*`` folders whose writer is dead (killed mid-export); a live
    writer's folder is kept."""
    for item in model_root.glob(f"{TMP_EXPORT}*"):
        if item.is_dir() and _writer_gone(item):
            shutil.rmtree(item, ignore_errors=True)
            log(f"removed {item}, an export a killed process left unfinished")


def _as_json(inputs: dict) -> dict:
    """Tensors (strings as UTF-8) -> JSON values of the same nesting."""
    def plain(value):
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {name: plain(tensor.numpy().tolist()) for name, tensor in inputs.items()}


def check_saved_model(path: Path, sample_inputs: dict) -> dict:
    """Reload a SavedModel and call ``serving_default`` once; raise if it does not work."""
    try:
        loaded = load_saved_model(path)
    except ExportError as exc:  # a folder just written that does not reload is a bug, not
        # the user's to fix: keep TensorFlow's traceback, not a one-line "re-export it"
        raise RuntimeError(f"{path}: the export just written does not reload") from exc.__cause__
    outputs = loaded.signatures["serving_default"](**sample_inputs)
    if not outputs:
        raise RuntimeError(f"exported model at {path} returned no outputs")
    return outputs
