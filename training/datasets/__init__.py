"""Loaders, one per data-set layout: decode through ``app.imaging``, split by patient."""
