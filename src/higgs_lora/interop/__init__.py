"""Other tools' formats: ONNX export (onnx.py) and the notebook's Keras models (keras.py)."""
