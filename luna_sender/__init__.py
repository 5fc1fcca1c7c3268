"""luna-sender: a wire-compatible reimplementation of the LUNA PLATFORM event gateway."""

__version__ = "0.1.0"
# The service API version reported by /version (`Version.api`); see docs/compatibility.md.
VERSION_PARTS = {"major": 0, "minor": 1, "patch": 0}
