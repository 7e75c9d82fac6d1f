"""Business rules for user-login events.

Pure standard-library code: no broker client, schema library or logger lives
here, so the rules can be tested in microseconds and reused by every adapter.
"""
