"""Network definitions shared by training, export and (through ONNX) the app.

Submodules are imported lazily so that light modules (``runtime.artifacts``,
``runtime.preprocess``, ``models.words``) can be used without importing torch.
Use :func:`models.registry.create_model` to build any registered network.
"""
