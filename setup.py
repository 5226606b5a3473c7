from setuptools import find_packages, setup

requires = [
    "pyramid>=2.0,<3",
    "pyramid_beaker>=0.9",
    "Beaker>=1.13",
    "pyramid_jinja2>=2.10",
    "pyramid_tm>=2.5",
    "zope.sqlalchemy>=3.0",
    "SQLAlchemy>=2.0,<3",
    "alembic>=1.13",
    "argon2-cffi>=23.1",
    "waitress>=3.0",
    "psycopg[binary]>=3.1",
    "pygal>=3.0",
    "prometheus-client>=0.20",
    "ua-parser>=1.0",
]

tests_require = [
    "pytest>=8",
    "WebTest>=3.0",
    "ruff>=0.6",
    "playwright>=1.45",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "locust>=2.30",
    "psycopg-pool>=3.2",
]

setup(
    name="session-expiry",
    version="0.1.0",
    description="Web sessions that end correctly and humanely, for Pyramid.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"session_expiry": ["templates/**/*", "static/**/*", "app/templates/**/*"]},
    python_requires=">=3.11",
    install_requires=requires,
    extras_require={"testing": tests_require},
    entry_points={
        "paste.app_factory": ["main = session_expiry.app:make_app"],  # the demo (pserve)
        "beaker.backends": [
            "expiry:memory = session_expiry.stores.beaker:StoreNamespace",
            "expiry:sql = session_expiry.stores.beaker:StoreNamespace",
        ],
        "console_scripts": [
            "session-users = session_expiry.app.scripts.users:main",
            "session-sweeper = session_expiry.scripts.sweeper:main",
        ],
    },
)
