"""The torch networks (training tier): training builds them, export turns them into ONNX.

The serving code around the exported models (word vectors, gallery index, Grad-CAM, sequence
decoding, video frames) is in :mod:`runtime`, without torch. Use
:func:`models.registry.create_model` to build any registered network.
"""
