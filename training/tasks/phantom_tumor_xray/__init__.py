"""phantom_tumor_xray: tumour tracking on 16-bit X-ray phantom frames (``/segment/xray``)."""
