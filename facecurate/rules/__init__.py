"""Rejection rules: measures per face (geometry, pixels, eyes), a registry of thresholds, the filter stage."""
