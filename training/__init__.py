"""Offline training package (TensorFlow/Keras): synthetic data, training, calibration, export."""
