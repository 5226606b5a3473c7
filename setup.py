import ast
import re
from pathlib import Path

from setuptools import find_packages, setup

# Where the project is published: the project URLs below are built from it, so it must
# name the repository the package's source, issues and changelog really live in.
REPOSITORY = "https://github.com/session-expiry/session-expiry"

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """``__version__`` from src/session_expiry/_version.py, read as text (no import)."""
    path = HERE / "src" / "session_expiry" / "_version.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign)
                and any(isinstance(target, ast.Name) and target.id == "__version__"
                        for target in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise RuntimeError(f"no __version__ = '...' in {path}")


# What the add-on imports at run time.
requires = [
    "pyramid>=2.0,<3",
    "pyramid_beaker>=0.9",
    "Beaker>=1.13",
    "pyramid_jinja2>=2.10",
    "SQLAlchemy>=2.0,<3",
    "alembic>=1.13",
    "pygal>=3.0",
    "prometheus-client>=0.20",
    "ua-parser>=1.0",
]

# The PostgreSQL driver, for the SQL store (and the app database) on PostgreSQL.
postgresql_requires = [
    "psycopg[binary]>=3.1",
]

# The Redis client, for the Redis store (``expiry:redis``; it serves Valkey as well), with
# its C parser.
redis_requires = [
    "redis>=5.0",
    "hiredis>=2.3",
]

# The suite runs the demo (its own distribution, demo/: make installs it beside this one),
# on PostgreSQL as well as SQLite.
tests_require = [
    "pytest>=8",
    "WebTest>=3.0",
    "ruff>=0.6",
    "playwright>=1.45",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "locust>=2.30",
    "psycopg-pool>=3.2",
    "pyramid_session_redis>=1.8",
    *postgresql_requires,
    *redis_requires,
]

setup(
    name="session-expiry",
    version=read_version(),
    description="Web sessions that end correctly and humanely, for Pyramid.",
    # The README's relative links and images, made absolute for the package index.
    long_description=re.sub(r"\]\((?!https?:)([^)#]+)", rf"]({REPOSITORY}/blob/main/\1",
                            (HERE / "README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
    author="the session-expiry maintainers",
    license="MIT",
    license_files=["LICENSE"],
    url=REPOSITORY,
    project_urls={
        "Documentation": f"{REPOSITORY}/tree/main/docs",
        "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
        "Source": REPOSITORY,
        "Issues": f"{REPOSITORY}/issues",
    },
    keywords=[
        "pyramid", "session", "session expiry", "idle timeout", "absolute timeout",
        "beaker", "wsgi", "security", "sign-out",
    ],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Pyramid",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: Session",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
        "Typing :: Typed",
    ],
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"session_expiry": [
        "py.typed", "templates/**/*", "static/**/*",
        "stores/redis/lua/*.lua",
        "migrations/env.py", "migrations/script.py.mako", "migrations/versions/*.py",
    ]},
    python_requires=">=3.11",
    install_requires=requires,
    extras_require={
        "postgresql": postgresql_requires,
        "redis": redis_requires,
        "testing": tests_require,
    },
    entry_points={
        "beaker.backends": [
            "expiry:memory = session_expiry.stores.beaker:StoreNamespace",
            "expiry:sql = session_expiry.stores.beaker:StoreNamespace",
            "expiry:redis = session_expiry.stores.beaker:StoreNamespace",
        ],
        "console_scripts": [
            "session-sweeper = session_expiry.scripts.sweeper:main",
            "session-expiry-db = session_expiry.scripts.database:main",
        ],
    },
)
