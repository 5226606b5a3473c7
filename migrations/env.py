"""The demo's Alembic environment: the database URLs come from the app's own settings loader.

``alembic -c <ini> upgrade heads`` runs the demo's revisions (users) and, through the
ini's ``version_locations``, the add-on's (branch ``session_expiry``, its session
tables), on the application database (``sqlalchemy.url``) and, when the SQL store's
``session.url`` names another one, on that too: each keeps its own ``alembic_version``.
The Redis store's ``session.url`` is a Redis server, which needs no tables.
"""
from alembic import context
from sqlalchemy import engine_from_config, pool

from session_expiry.settings import from_ini
from session_expiry.stores.sql import metadata as session_metadata
from session_expiry_demo.models import Base

config = context.config
target_metadata = [Base.metadata, session_metadata]


def database_urls() -> list[str]:
    # Tests hand one URL over directly; otherwise the ini given with -c is the app's ini.
    given = config.get_main_option("sqlalchemy.url")
    if given:
        return [given]
    settings = from_ini(config.config_file_name)
    urls = [settings.get("sqlalchemy.url")]
    if str(settings.get("session.type", "")).strip() == "expiry:sql":
        urls.append(settings.get("session.url"))
    urls = list(dict.fromkeys(url.strip() for url in urls if url and url.strip()))
    if not urls:
        raise SystemExit("sqlalchemy.url is not set: write it in the ini or set SQLALCHEMY_URL")
    return urls


def run_migrations_offline(url):
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online(url):
    engine = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


for database_url in database_urls():
    if context.is_offline_mode():
        run_migrations_offline(database_url)
    else:
        run_migrations_online(database_url)
