"""Export trained checkpoints to ONNX + the artifacts manifest; parity and benchmarks."""
