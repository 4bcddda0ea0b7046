"""osbox: the Python SDK for the OpenSandbox API, and a local OpenSandbox-compatible runtime."""

__version__ = "0.1.0"
