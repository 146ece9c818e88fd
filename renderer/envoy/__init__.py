"""A real Envoy as the data plane: locating the binary, and running it on a bootstrap built as data."""
