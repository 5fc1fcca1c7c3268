"""The servers the benchmark compares, each speaking its own client protocol."""
