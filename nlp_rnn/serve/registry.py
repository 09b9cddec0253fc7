"""Which models the server knows, which version of each it serves, and how versions change.

A model is a folder of integer version folders (``saved_models/<name>/<version>/``, the layout
``export.py`` writes and TF Serving reads). The newest *complete* version is served
(``inference.is_complete_version``). A poll thread looks for newer versions every
``poll_seconds``; one is loaded only once its file listing has stayed the same for one poll
(a folder being copied in by hand is complete only when the copy ends), loaded and warmed up
off the event loop, and then swapped in: requests that already hold the old version finish on
it, new ones get the new one, so no request fails during the swap. A version that fails to load
is logged and skipped (tried again only if its files change); the server keeps serving the
version it had. Loading and its errors are ``inference.py``'s, as for ``nlp-rnn predict``.

Discovery (``find_models``) needs no TensorFlow, so the CLI validates its arguments first.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nlp_rnn.errors import ExportError
from nlp_rnn.inference import is_complete_version, load_export, versions

log = logging.getLogger("nlp_rnn.serve")


# ---- discovery (no TensorFlow) -----------------------------------------------------------------


def _is_model_root(path: Path) -> bool:
    return bool(versions(path))


def find_models(paths: list[str]) -> dict[str, Path]:
    """Model name -> model folder for each argument of ``nlp-rnn serve``.

    An argument is one model's folder (it holds integer version folders; the model is named
    after the folder) or an export root holding such model folders (``saved_models``).
    Raises ExportError for a missing path, a folder with no models, or two models of one name.
    """
    give = "give an export root like saved_models, or one model's folder saved_models/NAME"
    found: dict[str, Path] = {}
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise ExportError(arg, "no such folder", give)
        if (path / "saved_model.pb").exists():
            raise ExportError(arg, "a version folder", f"give its model folder {path.parent} "
                              "(the server picks the newest version and follows new ones)")
        roots = [path] if _is_model_root(path) else sorted(
            p for p in path.iterdir() if p.is_dir() and _is_model_root(p))
        if not roots:
            raise ExportError(arg, "no models (no <name>/<version>/ folders in it, and it holds "
                              "no <version>/ folders itself)", give)
        for root in roots:
            if root.name in found and found[root.name].resolve() != root.resolve():
                raise ExportError(root, f"a second model named {root.name!r} (the first: "
                                  f"{found[root.name]})", "serve one of them, or rename a folder")
            found[root.name] = root
    return found


def _fingerprint(version_dir: Path) -> tuple:
    """(relative path, size, mtime) of every file: unchanged across a poll = the copy ended."""
    return tuple(sorted((str(p.relative_to(version_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in version_dir.rglob("*") if p.is_file()))


# ---- loaded models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: dtype name (``"string"``, ``"int32"``, ...) and shape
    (``None`` for an unknown dimension; the first is the batch unless the rank is 0)."""

    dtype: str
    shape: tuple

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    function: object = field(repr=False, compare=False)  # the loaded ConcreteFunction

    def __call__(self, inputs: dict) -> dict:
        """numpy inputs (strings as object arrays of bytes) -> numpy outputs, in a worker thread."""
        import tensorflow as tf

        tensors = {name: tf.constant(value, dtype=self.inputs[name].dtype)
                   for name, value in inputs.items()}
        return {name: value.numpy() for name, value in self.function(**tensors).items()}


def _tensor_info(spec) -> TensorInfo:
    return TensorInfo(spec.dtype.name, tuple(spec.shape.as_list()) if spec.shape.rank is not None
                      else ())


class ModelVersion:
    """One loaded SavedModel version: its signatures, nlp-rnn metadata and batchers."""

    def __init__(self, name: str, version: int, path: Path):
        """Raises ExportError (naming ``path``) for a version that cannot be served."""
        self.name, self.version, self.path = name, version, path
        self._export = load_export(path)  # keeps the functions' variables alive
        self.metadata = self._export.metadata
        self._export.signature("serving_default")  # TF Serving's default: required
        self.signatures = {
            key: Signature(key, {k: _tensor_info(s) for k, s in
                                 fn.structured_input_signature[1].items()},
                           {k: _tensor_info(s) for k, s in fn.structured_outputs.items()}, fn)
            for key, fn in self._export.signatures.items()}
        self.batchers: dict[str, object] = {}  # signature name -> Batcher (made by the app)

    def warm_up(self) -> None:
        """Call every signature once on a batch of one empty string (or zeros), so the first real
        request does not pay for graph optimisation."""
        import numpy as np

        for signature in self.signatures.values():
            sample = {}
            for name, info in signature.inputs.items():
                shape = tuple(1 if d is None else d for d in info.shape)
                sample[name] = np.full(shape, b"" if info.dtype == "string" else 0,
                                       dtype=object if info.dtype == "string" else info.dtype)
            try:
                signature(sample)
            except Exception as exc:  # a signature that rejects zeros still serves real input
                log.info("%s/%s: warm-up call of %s failed (%s)", self.name, self.version,
                         signature.name, str(exc).splitlines()[0][:200])


@dataclass
class VersionStatus:
    state: str  # LOADING, AVAILABLE, END (unloaded or failed)
    error: str = ""


class Model:
    """A model folder and the version being served from it."""

    def __init__(self, name: str, root: Path):
        self.name, self.root = name, root
        self.current: ModelVersion | None = None
        self.status: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}  # version -> fingerprint it failed with
        self._seen: dict[int, tuple] = {}  # version -> fingerprint at the last poll

    def candidates(self, settle: bool) -> list[int]:
        """Complete versions newer than the served one, newest first; with ``settle`` only those
        whose files did not change since the last poll."""
        newest_served = self.current.version if self.current else 0
        ready = []
        for version in reversed(versions(self.root)):
            if version <= newest_served:
                break
            path = self.root / str(version)
            try:
                if not is_complete_version(path):
                    continue
                fingerprint = _fingerprint(path)
            except OSError:  # removed or half-copied under us
                continue
            seen, self._seen[version] = self._seen.get(version), fingerprint
            if self._failed.get(version) == fingerprint or (settle and seen != fingerprint):
                continue
            ready.append(version)
        return ready

    def try_load(self, version: int) -> bool:
        path = self.root / str(version)
        self.status[version] = VersionStatus("LOADING")
        try:
            loaded = ModelVersion(self.name, version, path)
            loaded.warm_up()
        except Exception as exc:  # a broken folder must never take the server down
            # an ExportError names the folder, what is wrong and what to do; anything else
            # gets the folder and its type put in front
            message = str(exc) if isinstance(exc, ExportError) else \
                f"{path}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            message = message[:500]
            log.warning("model %s version %d failed to load, skipped: %s", self.name, version,
                        message)
            self._failed[version] = self._seen.get(version) or _fingerprint(path)
            self.status[version] = VersionStatus("END", message)
            return False
        previous, self.current = self.current, loaded  # one assignment: the swap
        self.status[version] = VersionStatus("AVAILABLE")
        if previous is not None:
            self.status[previous.version] = VersionStatus("END")
        log.warning("model %s: serving version %d (%s)", self.name, version, path)
        return True

    def refresh(self, settle: bool = True) -> None:
        for version in self.candidates(settle):
            if self.try_load(version):
                return


class Registry:
    """All served models; ``start()`` loads them and starts the poll thread."""

    def __init__(self, roots: dict[str, Path], poll_seconds: float = 1.0):
        self.models = {name: Model(name, root) for name, root in roots.items()}
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for model in self.models.values():
            model.refresh(settle=False)
        self._thread = threading.Thread(target=self._poll, name="nlp-rnn-model-poll",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for model in self.models.values():
                try:
                    model.refresh()
                except Exception:  # e.g. a model folder removed: keep polling the others
                    log.exception("polling model %s", model.name)
