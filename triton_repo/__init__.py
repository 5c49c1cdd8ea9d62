"""Triton model repository: config messages, repository writer, Python-backend models, server launch."""
