"""Typed settings (file, environment, flags) and the reference page generated from them."""
