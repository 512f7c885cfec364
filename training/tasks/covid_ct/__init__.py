"""covid_ct: COVID-19 chest CT classifier (``/classify/ct``), MosMedData layout."""
