"""Export in one place: the models to ONNX (and from there TensorRT), with the checks that the
exported graphs equal PyTorch."""
