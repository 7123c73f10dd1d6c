"""One module per resource of contract section 4."""
