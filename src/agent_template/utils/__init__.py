"""Small helpers that import nothing else from the package."""
