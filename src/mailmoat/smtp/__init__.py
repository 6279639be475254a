"""smtp layer (see ARCHITECTURE.md)."""
