"""Each method's export-time code, one subpackage per method of the registry (:mod:`methods`):
``views`` (the export wrappers the descriptor's variants name), ``evaluation`` (the headline
metric measured through an exported model) and ``assets`` (files written beside the ONNX
file, examples). The training plug-ins are their counterpart in :mod:`training.methods`.
"""
