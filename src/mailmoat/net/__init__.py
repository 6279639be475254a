"""net layer (see ARCHITECTURE.md)."""
