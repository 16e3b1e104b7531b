"""facecurate: keyword image searches to a clean face dataset."""
__version__ = "0.1.0"
