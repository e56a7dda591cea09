"""The active-learning model and loop: ONNX encoder, ONNX training-step graphs, query strategies."""
