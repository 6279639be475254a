"""auth layer (see ARCHITECTURE.md)."""
