"""Bytes to arrays and arrays to answers: pure numpy/pillow/pydicom/nibabel.

This package never imports FastAPI or TensorFlow: the training package imports it, so the
preprocessing a model is trained with is the code that serves it.
"""
