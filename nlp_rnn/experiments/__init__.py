"""Self-contained diagnostic experiments (each module is imported only by the command that
runs it)."""
