"""spool layer (see ARCHITECTURE.md)."""
