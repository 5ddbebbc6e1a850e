"""bitface."""
