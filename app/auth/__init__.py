"""Authentication: password hashing, tokens, and the request's current user."""
