"""Load: many concurrent clients against a farm of app servers and sweepers on one PostgreSQL."""
