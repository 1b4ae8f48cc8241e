"""onnxruntime inference engine: one session per model, loaded through the manifest.

* The ONNX file's sha256 is checked against the manifest before a session is created; a
  corrupt, truncated or swapped file is refused with a clear message.
* The file is the one the manifest serves (``precision``: the fp32 export, or its INT8
  version when export measured it fast and accurate enough, :mod:`export.int8`); both are
  sha256-checked the same way.
* Providers are chosen explicitly: CUDA when onnxruntime-gpu sees a GPU, else CPU; the
  active provider is reported.
* ``run`` is safe to call from several threads: onnxruntime's ``InferenceSession.run`` is
  thread-safe and the engine keeps no per-call state; lazy loading is guarded by a lock.
* Files can change under a running app: each ``get`` looks at the manifest's and the model
  file's stat (inode, size, mtime). A changed manifest is re-read (a request in flight
  finishes with the model it has); a model whose entry changed is reloaded after its sha256
  check, so a re-export is served without a restart. A model file deleted or rewritten
  under the app gives that model a clear error (the others keep answering) until a file
  matching the manifest is back. An unreadable manifest (being rewritten by hand, say)
  keeps the last good one in service.
* Under a request deadline (:mod:`runtime.deadline`) a run is terminated when the request
  is stopped.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime import deadline as deadlines
from runtime import domain
from runtime.artifacts import artifacts_dir
from runtime.manifest import (ManifestError, check_entry_paths, inside, manifest_path,
                              read_manifest, served_file, sha256_file)
from runtime.preprocess import PreprocessSpec, to_input

log = logging.getLogger("replens.engine")
FileStat = tuple[int, int, int]


def file_stat(path: Path) -> FileStat | None:
    """(inode, size, mtime_ns) of ``path``, None when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ModelUnavailableError(RuntimeError):
    """A model cannot be served (missing, corrupt, or not in the manifest)."""

    user_error = True  # runtime.cli: a one-line message, exit 2


def available_providers() -> list[str]:
    """Execution providers to request, in preference order (CUDA -> CPU)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]
    if os.environ.get("REPLENS_PROVIDER", "").lower() == "cpu":
        wanted = ["CPUExecutionProvider"]
    return wanted or ["CPUExecutionProvider"]


class OnnxModel:
    """One exported model: its manifest entry and an onnxruntime session.

    Args:
        name: manifest key ("seqfake", "qmil", "dcl", "abcnorm", ...).
        entry: the model's manifest entry.
        artifacts: the artifacts folder the entry's ``file`` is relative to.
        precision: "fp32" or "int8" to load that file; None (default): the one the
            manifest serves (:func:`runtime.manifest.served_file`).
    """

    def __init__(self, name: str, entry: dict[str, Any], artifacts: Path,
                 intra_op_threads: int | None = None, precision: str | None = None) -> None:
        import onnxruntime as ort

        self.name, self.entry = name, entry
        try:
            check_entry_paths(artifacts, name, entry)  # no path may leave the artifacts folder
            file, expected, self.precision = served_file(entry, precision)
        except ManifestError as exc:
            raise ModelUnavailableError(str(exc)) from exc
        except (KeyError, ValueError) as exc:
            raise ModelUnavailableError(f"{name}: {exc.args[0]}") from exc
        self.path = artifacts / file
        self.artifacts = Path(artifacts)
        self.stat = file_stat(self.path)  # what was loaded (before reading: a later change shows)
        if not self.path.is_file():
            raise ModelUnavailableError(f"{name}: ONNX file {self.path} is missing; "
                                        f"re-run `python -m export --all`")
        digest = sha256_file(self.path)
        if digest != expected:
            raise ModelUnavailableError(
                f"{name}: {self.path} does not match the manifest (sha256 {digest[:12]}... vs "
                f"{expected[:12]}...): the file is corrupt or was replaced. "
                f"Re-export with `python -m export --all`.")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=available_providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelUnavailableError(f"{name}: onnxruntime cannot load {self.path}: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        pre = entry.get("preprocess")  # None for models whose inputs are not images
        self.preprocess = PreprocessSpec.from_dict(pre) if pre else None
        self.labels: list[str] = list(entry.get("labels", []))
        self.version: str = str(entry.get("version", "?"))

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """The training preprocessing (:func:`runtime.preprocess.to_input`): (N, C, H, W)."""
        if self.preprocess is None:
            raise ValueError(f"{self.name}: the model takes no images (no preprocessing)")
        return to_input(images, self.preprocess)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session; returns every output by name."""
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}")
        feeds = {k: inputs[k] for k in self.input_names}
        deadline = deadlines.current()
        if deadline is None:
            outs = self.session.run(None, feeds)
        else:  # a request with a time limit: the run is terminated if the request is stopped
            import onnxruntime as ort

            deadline.check()
            opts = ort.RunOptions()
            with deadline.watch(opts):
                outs = self.session.run(None, feeds, opts)
        return dict(zip(self.output_names, outs))

    def sidecar(self, suffix: str) -> tuple[Path, str | None] | None:
        """(path, manifest sha256) of the exported sidecar ``suffix`` (e.g. ``.head.npz``),
        as the manifest records it: one per run, whichever ONNX file (fp32 or INT8) is
        served; None when the run has none."""
        side = self.entry.get("sidecars", {}).get(suffix)
        if not side:
            return None
        key = f"models.{self.name}.sidecars.{suffix}.file"
        return inside(self.artifacts, side["file"], key), side.get("sha256")

    def domain_check(self, outputs: dict[str, np.ndarray], inputs: np.ndarray | None = None
                     ) -> list[dict[str, Any]] | None:
        """Per input of ``outputs`` (a :meth:`run` result; per image for a bag model):
        whether it is like the training data (:mod:`runtime.domain`); None when the model
        was exported without a domain check. ``inputs``: the image input that gave
        ``outputs`` (:meth:`prepare`'s array, (B, K, C, H, W) for a bag), for the check's
        generic part; without it only the model's own features are judged. A domain file
        that does not match the manifest is an error for this model.
        """
        spec, side = self.entry.get("domain"), self.sidecar(domain.SUFFIX)
        if not spec or not side:
            return None
        try:
            dm = domain.load(*side)
        except domain.DomainFileError as exc:
            raise ModelUnavailableError(f"{self.name}: {exc}") from exc
        per_instance = spec.get("unit") == "instance"  # a bag model: one answer per image
        generic = None
        if dm.generic is not None and inputs is not None and self.preprocess is not None:
            generic = self._generic_features(spec["generic"]["kind"], inputs)
        return domain.check(dm, domain.features(outputs, spec["features"], per_instance),
                            str(spec.get("trained_on", "")), generic)

    def _generic_features(self, kind: str, inputs: np.ndarray) -> np.ndarray:
        """The generic features of the domain check (:func:`runtime.domain.generic_features`)."""
        session = None
        if kind == "face_net":
            side = self.sidecar(domain.GENERIC_SUFFIX)
            if side is None:
                raise ModelUnavailableError(f"{self.name}: its domain network is not in the "
                                            f"manifest; re-export the model.")
            try:
                session = domain.network(*side)
            except domain.DomainFileError as exc:
                raise ModelUnavailableError(f"{self.name}: {exc}") from exc
        pre = self.preprocess
        return domain.generic_features(kind, inputs, pre.mean, pre.std, session)


def pick_model(served: list[str], default: str, name: Any) -> str:
    """The model a request asks for (every tab, API endpoint and CLI command): ``name`` when
    given, else the method's default when it is served, else the first served model; an
    unknown name is refused by :meth:`Engine.get`."""
    name = str(name or "").strip()
    if name:
        return name
    return default if default in served or not served else served[0]


class Engine:
    """All models of one artifacts folder, loaded lazily and cached.

    ``Engine.get(name)`` raises :class:`ModelUnavailableError` with a user-facing message
    when the model cannot be served; other models keep working.
    """

    def __init__(self, artifacts: str | Path | None = None) -> None:
        self.artifacts = artifacts_dir(artifacts)
        self._models: dict[str, OnnxModel] = {}
        self._errors: dict[str, tuple[str, FileStat | None]] = {}  # message, file stat then
        self._lock = threading.Lock()
        self.manifest: dict[str, Any] = {"models": {}}
        self.manifest_error: str | None = None
        self.manifest_warning: str | None = None
        self._manifest_stat: FileStat | None = None
        self._manifest_loaded = False
        # what to say of a model that is not exported yet (the app's build queue sets it)
        self.pending: Callable[[str], str | None] | None = None
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        """Re-read the manifest if its file changed (call with the lock held)."""
        path = manifest_path(self.artifacts)
        st = file_stat(path)
        if self._manifest_loaded and st == self._manifest_stat:
            return
        try:
            new = read_manifest(self.artifacts)
        except ManifestError as exc:
            if self.manifest["models"] and self.manifest_error is None:
                msg = (f"{exc}; still serving the models of the last readable manifest")
                if msg != self.manifest_warning:
                    log.warning(msg)
                self.manifest_warning = msg
                return  # retried on the next request
            self.manifest, self.manifest_error = {"models": {}}, str(exc)
            self._manifest_stat, self._manifest_loaded = st, True
            return
        old = self.manifest["models"]
        self.manifest, self.manifest_error, self.manifest_warning = new, None, None
        self._manifest_stat, self._manifest_loaded = st, True
        for name in set(self._models) | set(self._errors):
            if old.get(name) != new["models"].get(name):  # re-exported or removed: reload
                self._models.pop(name, None)
                self._errors.pop(name, None)
                log.info("manifest changed: %s will be reloaded", name)

    def names(self) -> list[str]:
        with self._lock:
            self._refresh()
        return list(self.manifest["models"])

    def served(self, method: str) -> list[str]:
        """Manifest names of the servable models of ``method`` now, in manifest order."""
        self.names()  # re-reads a changed manifest
        return [n for n, e in self.manifest["models"].items()
                if e.get("method") == method and e.get("served", True)]

    def get(self, name: str, method: str | None = None) -> OnnxModel:
        """The model ``name``; with ``method``, refused unless it is a model of that method
        (a face command given a bag model, say), naming the models that would do."""
        with self._lock:
            self._refresh()
            if method is not None:
                entry = self.manifest["models"].get(name)
                if entry is not None and entry.get("method") != method:
                    fit = [n for n, e in self.manifest["models"].items()
                           if e.get("method") == method]
                    raise ModelUnavailableError(
                        f"model {name!r} is a {entry.get('method')} model; this needs a "
                        f"{method} model: " + (", ".join(fit) if fit else "none is exported"))
            if name in self._models:
                model = self._models[name]
                now = file_stat(model.path)
                if now == model.stat:
                    return model
                del self._models[name]  # the file changed under the app: check it again
                if now is None:
                    msg = (f"{name}: its ONNX file {model.path} was deleted while the app was "
                           f"running; re-export it (`python -m export --all`): the app serves "
                           f"it again without a restart")
                    log.warning(msg)
                    self._errors[name] = (msg, None)
                    raise ModelUnavailableError(msg)
                log.warning("%s: %s changed on disk; checking it again", name, model.path)
            building = self.pending(name) if self.pending is not None and \
                name not in self.manifest["models"] else None
            if building:
                raise ModelUnavailableError(building)
            if self.manifest_error:
                raise ModelUnavailableError(self.manifest_error)
            if name not in self.manifest["models"]:
                raise ModelUnavailableError(
                    f"model {name!r} is not in {self.artifacts}/manifest.json; train and "
                    f"export it (`python -m training {name}` then `python -m export --all`)")
            entry = self.manifest["models"][name]
            if name in self._errors:
                msg, then = self._errors[name]
                if file_stat(self._served_path(entry)) == then:
                    raise ModelUnavailableError(msg)
                del self._errors[name]  # the file changed since: try again
            try:
                model = OnnxModel(name, entry, self.artifacts)
            except (ModelUnavailableError, KeyError, OSError) as exc:
                stat = file_stat(self._served_path(entry))
                self._errors[name] = (str(exc), stat)
                raise ModelUnavailableError(str(exc)) from exc
            self._models[name] = model
            return model

    def _served_path(self, entry: dict[str, Any]) -> Path:
        """The file the entry serves (fp32 or int8); the fp32 one if the entry is malformed."""
        try:
            return inside(self.artifacts, served_file(entry)[0], "file")
        except (KeyError, ValueError, ManifestError):
            return self.artifacts

    def status(self) -> dict[str, dict[str, str]]:
        """Per model: "ok" with provider and version, or the error message."""
        out: dict[str, dict[str, str]] = {}
        for name in self.names() or []:
            try:
                m = self.get(name)
                out[name] = {"status": "ok", "provider": m.provider, "version": m.version}
            except ModelUnavailableError as exc:
                out[name] = {"status": "unavailable", "error": str(exc)}
        return out
