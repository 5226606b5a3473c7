"""Alembic environment: the database URL comes from the app's own settings loader."""
from alembic import context
from sqlalchemy import engine_from_config, pool

from session_expiry.app.models import Base
from session_expiry.settings import from_ini
from session_expiry.stores.sql import metadata as session_metadata

config = context.config
# Tests hand the URL over directly; otherwise the ini given with -c is the app's ini.
url = config.get_main_option("sqlalchemy.url") or from_ini(config.config_file_name).get(
    "sqlalchemy.url")
if not url:
    raise SystemExit("sqlalchemy.url is not set: write it in the ini or set SQLALCHEMY_URL")
target_metadata = [Base.metadata, session_metadata]


def run_migrations_offline():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
