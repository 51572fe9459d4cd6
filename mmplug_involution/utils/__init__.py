"""Small helpers that are not layers or models."""
