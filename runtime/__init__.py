"""The serving runtime: exported models as onnxruntime sessions, without torch or a UI.

* :mod:`runtime.engine` - :class:`~runtime.engine.OnnxModel` (one session, sha256-checked
  against the manifest, CUDA -> CPU providers) and :class:`~runtime.engine.Engine` (every
  model of an artifacts folder, loaded lazily);
* :mod:`runtime.manifest` - ``manifest.json`` reading/writing and sha256;
* :mod:`runtime.preprocess` - the one preprocessing function shared by training, export
  and serving;
* :mod:`runtime.artifacts` - the artifacts folder and atomic writes;
* :mod:`runtime.calibration` - the temperature a manifest entry records, applied;
* :mod:`runtime.sequence` - the probability-ranked manipulation sequence;
* :mod:`runtime.words` - the query word vectors (GloVe, numpy);
* :mod:`runtime.gallery`, :mod:`runtime.gallery_build`, :mod:`runtime.ann` - the retrieval
  gallery, its folder build and its FAISS index (``runtime/gallery_index.yaml``);
* :mod:`runtime.cam` - Grad-CAM from exported features; :mod:`runtime.media` - video frames.

``export/``, ``training/`` and ``app/`` import this package; it imports none of them
(``.importlinter``).
"""
