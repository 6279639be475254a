"""web layer (see ARCHITECTURE.md)."""
