"""Alembic environment of the add-on's own tables, for ``session-expiry-db``.

A host that runs Alembic itself uses only the revisions in ``versions/`` (the branch
``session_expiry``), through its own ``env.py`` and ``version_locations``. This one
serves the console command: the URL and the version table come from it.
"""
from alembic import context
from sqlalchemy import create_engine, pool

from session_expiry.stores.sql import metadata

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      version_table=config.get_main_option("version_table"))
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
