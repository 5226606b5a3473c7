"""The demo application of session-expiry (``pserve development.ini``): its own distribution,
so that a host app installing the add-on gets no demo users, scripts or routes."""
from setuptools import find_packages, setup

setup(
    name="session-expiry-demo",
    version="0",
    description="The demo application of session-expiry: sign-in, a workspace, a JSON API.",
    license="MIT",
    packages=find_packages(),
    package_data={"session_expiry_demo": ["templates/*.jinja2"]},
    python_requires=">=3.11",
    install_requires=[
        "session-expiry",
        "argon2-cffi>=23.1",
        "waitress>=3.0",
        "pyramid_tm>=2.5",
        "zope.sqlalchemy>=3.0",
    ],
    entry_points={
        "paste.app_factory": ["main = session_expiry_demo:make_app"],
        "console_scripts": ["session-users = session_expiry_demo.scripts.users:main"],
    },
)
