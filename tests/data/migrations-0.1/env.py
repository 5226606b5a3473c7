"""The application's Alembic history as session-expiry 0.1.0 shipped it (users and the
session tables in one line, 0001 to 0007): the tests build a database of that release
with it, then upgrade it to this one's."""
from alembic import context
from sqlalchemy import create_engine, pool

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
