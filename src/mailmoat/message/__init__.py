"""message layer (see ARCHITECTURE.md)."""
