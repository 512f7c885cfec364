"""Seeded synthetic generators, one per data set, each writing the real data set's layout."""
