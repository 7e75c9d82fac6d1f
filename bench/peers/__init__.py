"""The same job written with other Python stream-processing frameworks, each run from its own venv."""
