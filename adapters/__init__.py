"""Implementations of the application's ports: brokers, codecs, files, logging, metrics."""
