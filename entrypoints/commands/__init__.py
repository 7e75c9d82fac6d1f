"""One module per CLI command; each exposes ``run(args, settings) -> exit status``."""
