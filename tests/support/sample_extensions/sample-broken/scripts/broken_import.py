"""Fails at import: the loader must report it and load the next file."""
raise RuntimeError("sample-broken fails on purpose at import")
