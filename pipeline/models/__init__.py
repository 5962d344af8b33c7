"""Models: the catalogue (configs/models.toml), the verified cache, the converters to ONNX, and the Segmenter
that runs one model on batches of frames."""
