"""prelabel's server: Label Studio protocol, label-config routing, media, encoding and project state.

Nothing in this package imports torch or a model library; models live behind ``model_adapters``.
"""
