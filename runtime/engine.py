"""onnxruntime inference engine: one session per model, loaded through the manifest.

* The ONNX file's sha256 is checked against the manifest before a session is created; a
  corrupt, truncated or swapped file is refused with a clear message.
* Providers are chosen explicitly: CUDA when onnxruntime-gpu sees a GPU, else CPU; the
  active provider is reported.
* ``run`` is safe to call from several threads: onnxruntime's ``InferenceSession.run`` is
  thread-safe and the engine keeps no per-call state; lazy loading is guarded by a lock.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifacts import artifacts_dir
from runtime.manifest import ManifestError, read_manifest, sha256_file
from runtime.preprocess import PreprocessSpec, to_input


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
    """

    def __init__(self, name: str, entry: dict[str, Any], artifacts: Path,
                 intra_op_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.name, self.entry = name, entry
        self.path = artifacts / entry["file"]
        if not self.path.is_file():
            raise ModelUnavailableError(f"{name}: ONNX file {self.path} is missing; "
                                        f"re-run `python -m export --all`")
        digest = sha256_file(self.path)
        if digest != entry.get("sha256"):
            raise ModelUnavailableError(
                f"{name}: {self.path} does not match the manifest (sha256 {digest[:12]}... vs "
                f"{str(entry.get('sha256'))[:12]}...): the file is corrupt or was replaced. "
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
        outs = self.session.run(None, {k: inputs[k] for k in self.input_names})
        return dict(zip(self.output_names, outs))


class Engine:
    """All models of one artifacts folder, loaded lazily and cached.

    ``Engine.get(name)`` raises :class:`ModelUnavailableError` with a user-facing message
    when the model cannot be served; other models keep working.
    """

    def __init__(self, artifacts: str | Path | None = None) -> None:
        self.artifacts = artifacts_dir(artifacts)
        self._models: dict[str, OnnxModel] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        try:
            self.manifest: dict[str, Any] = read_manifest(self.artifacts)
            self.manifest_error: str | None = None
        except ManifestError as exc:
            self.manifest, self.manifest_error = {"models": {}}, str(exc)

    def names(self) -> list[str]:
        return list(self.manifest["models"])

    def get(self, name: str, method: str | None = None) -> OnnxModel:
        """The model ``name``; with ``method``, refused unless it is a model of that method
        (a face command given a bag model, say), naming the models that would do."""
        if method is not None:
            entry = self.manifest["models"].get(name)
            if entry is not None and entry.get("method") != method:
                fit = [n for n, e in self.manifest["models"].items() if e.get("method") == method]
                raise ModelUnavailableError(
                    f"model {name!r} is a {entry.get('method')} model; this needs a {method} "
                    f"model: " + (", ".join(fit) if fit else "none is exported"))
        with self._lock:
            if name in self._models:
                return self._models[name]
            if self.manifest_error:
                raise ModelUnavailableError(self.manifest_error)
            if name not in self.manifest["models"]:
                raise ModelUnavailableError(
                    f"model {name!r} is not in {self.artifacts}/manifest.json; train and "
                    f"export it (`python -m training {name}` then `python -m export --all`)")
            if name in self._errors:
                raise ModelUnavailableError(self._errors[name])
            try:
                model = OnnxModel(name, self.manifest["models"][name], self.artifacts)
            except (ModelUnavailableError, KeyError, OSError) as exc:
                self._errors[name] = str(exc)
                raise ModelUnavailableError(str(exc)) from exc
            self._models[name] = model
            return model

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
