"""Runtime: load a bundle, pick a backend, run it through the one batching core."""
