"""Black-box integration suite: speaks only HTTP to a running medserve (see conftest.py)."""
