"""Queries and persistence: the only modules that build SQL."""
