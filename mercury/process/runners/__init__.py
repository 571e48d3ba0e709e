"""One module per runner (local, docker; a cluster runner fits the same interface)."""
