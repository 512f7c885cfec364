"""The PACS round trip: DICOMweb (QIDO/WADO/STOW through dicomweb-client), routing series to
models by their cards, and the durable job runner."""
