"""Lowest layer: errors, paths, names, specs, config parsing, device names, file helpers.

Imports nothing else of pipe and no heavy library at import time.
"""
