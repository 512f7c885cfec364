"""pneumonia_xray: paediatric chest X-ray pneumonia classifier (``/classify/xray``)."""
