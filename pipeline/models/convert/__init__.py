"""Converters that turn the registry's model files into ONNX: TF.js (rvm), TFLite (MediaPipe selfie) and
the ISNet graph rewrite."""
