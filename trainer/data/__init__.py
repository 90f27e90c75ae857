"""Reading, validating, splitting and generating ratings data."""
