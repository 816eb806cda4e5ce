"""Response cache with versioned keys: Redis when configured, else in-process."""
