"""The serving runtime: exported models as onnxruntime sessions, without torch or a UI.

* :mod:`runtime.engine` - :class:`~runtime.engine.OnnxModel` (one session, sha256-checked
  against the manifest, CUDA -> CPU providers) and :class:`~runtime.engine.Engine` (every
  model of an artifacts folder, loaded lazily);
* :mod:`runtime.manifest` - ``manifest.json`` reading/writing and sha256;
* :mod:`runtime.preprocess` - the one preprocessing function shared by training, export
  and serving;
* :mod:`runtime.artifacts` - the artifacts folder and atomic writes.

``export/`` (bench, gallery) and ``app/`` both import this package; it imports neither.
"""
