"""gateway layer (see ARCHITECTURE.md)."""
