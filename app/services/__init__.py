"""One service per tab: validate inputs, run the ONNX model, return JSON + pictures.

The Gradio UI, the API endpoints and the CLI all call these functions, so the three
give the same answers.
"""
