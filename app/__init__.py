"""The RepLens application: onnxruntime engine, predictors, Gradio UI and CLI.

The app imports nothing from ``training/``: it serves the exported ONNX models listed in
the artifacts manifest.
"""
__version__ = "0.1.0"
