"""brain_tumor_mri: FLAIR lesion segmentation (``/segment/mri``), kaggle_3m layout."""
