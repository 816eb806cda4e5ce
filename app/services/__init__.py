"""Business rules. Services take plain values and the acting user, never a Flask request."""
