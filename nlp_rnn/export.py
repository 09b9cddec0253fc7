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

from nlp_rnn import atomic
from nlp_rnn.errors import UserError

METADATA_FILE = "assets.extra/nlp_rnn.json"  # TF Serving ignores assets.extra/
TMP_EXPORT = ".tmp-export-"
# what a version folder holds once its rename made it visible; a folder without them is
# empty or half-copied by hand (an rsync in progress) and never the one `predict NAME` picks
COMPLETE_VERSION = ("saved_model.pb", "variables/variables.index", METADATA_FILE)


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


def export_saved_model(model, endpoints: dict, trackables: list, export_root: str,
                       name: str, sample_inputs: dict, metadata: dict, log=print) -> Path:
    """Write ``endpoints`` (tf.functions with input signatures) as a new SavedModel version.

    Args:
        trackables: layers holding lookup tables the endpoints use (vectorizers).
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
    # the pid in the name tells a later export whether the writer is still alive
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_EXPORT}{os.getpid()}-", dir=model_root))
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
        # the checked call's inputs, as TF Serving's columnar request form takes them: a ready
        # example for clients, the demo page and the contract test
        metadata = {**metadata, "example_inputs": _as_json(sample_inputs)}
        atomic.write_text(tmp / METADATA_FILE, json.dumps(metadata, indent=2))
        atomic.make_private_dir_public(tmp)  # mkdtemp's 0700 would lock out a TF Serving user
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_exports(model_root: Path, log=print) -> None:
    """Delete ``.tmp-export-<pid>-*`` folders whose writer is dead (killed mid-export).

    A live writer's folder is kept; one named by an older nlp-rnn (no pid) is stale.
    """
    for item in model_root.glob(f"{TMP_EXPORT}*"):
        pid = item.name[len(TMP_EXPORT):].partition("-")[0]
        if item.is_dir() and not (pid.isdigit() and _pid_alive(int(pid))):
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
    complete = [v for v in found if is_complete_version(path / str(v))]
    if complete:
        return path / str(complete[-1])
    if found:  # name what the newest lacks: "not exported by nlp-rnn" or "copied in part"
        newest = path / str(found[-1])
        lacking = [part for part in COMPLETE_VERSION if not (newest / part).is_file()]
        what = ("not exported by nlp-rnn" if lacking == [METADATA_FILE] else
                "an empty or partly copied version folder")
        raise UserError(f"{newest}: {what} (missing {', '.join(lacking)}); no version of "
                        f"{model_dir} is complete")
    raise UserError(f"{model_dir}: not a SavedModel (no saved_model.pb, no version folders)")


class ExportMetadata(dict):
    """An export's ``nlp_rnn.json``; a key it lacks is a UserError naming the folder (a damaged
    or hand-edited file), not a KeyError deep inside predict or evaluate."""

    def __init__(self, values: dict, version_dir: Path):
        super().__init__(values)
        self.version_dir = version_dir

    def __missing__(self, key):
        raise UserError(f"{self.version_dir}: damaged {METADATA_FILE}: no {key!r} key "
                        "(re-export the model)")


def read_metadata(version_dir: Path) -> ExportMetadata:
    """The nlp-rnn metadata of a version folder (no TensorFlow); damage is a UserError."""
    meta = version_dir / METADATA_FILE
    if not meta.exists():
        raise UserError(f"{version_dir}: not exported by nlp-rnn (missing {METADATA_FILE})")
    damaged = f"{version_dir}: damaged {METADATA_FILE}"
    try:
        values = json.loads(meta.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{damaged}: invalid JSON ({exc.msg}: line {exc.lineno} column "
                        f"{exc.colno})") from None
    except RecursionError:
        raise UserError(f"{damaged}: invalid JSON (nested too deeply)") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{damaged}: invalid UTF-8 at byte {exc.start}") from None
    if not isinstance(values, dict):
        raise UserError(f"{damaged}: expected a JSON object")
    if not isinstance(values.get("task"), str):
        raise UserError(f"{damaged}: no 'task' key (re-export the model)")
    return ExportMetadata(values, version_dir)
