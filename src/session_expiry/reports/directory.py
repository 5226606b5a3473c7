"""Who the user ids are: the host application's answer, asked through one small interface.

The add-on knows user ids only (what ``remember`` was given). The report shows
names, filters by name, and asks for a password before "sign out all other
sessions"; the host application says how with ``config.set_user_directory``.
"""
from __future__ import annotations

from collections.abc import Iterable

from zope.interface import Interface


class IUserDirectory(Interface):
    """What the report asks the host application about its users."""

    def names(request, user_ids: Iterable[str]) -> dict[str, str]:  # noqa: N805 (an Interface)
        """Display names of ``user_ids`` (ids it does not know may be left out)."""

    def find(request, name: str) -> str | None:  # noqa: N805
        """The user id of the user called ``name``, or None."""

    def verify_password(request, user_id: str, password: str) -> bool | None:  # noqa: N805
        """Whether ``password`` is that user's; None if this directory cannot tell."""


class UserIds:
    """The directory when the host application names none: a user's name is its id."""

    def names(self, request, user_ids):
        return {user_id: user_id for user_id in user_ids}

    def find(self, request, name):
        return name or None

    def verify_password(self, request, user_id, password):
        return None


def set_user_directory(config, directory) -> None:
    """``config.set_user_directory(directory)``: the host application's users."""
    directory = config.maybe_dotted(directory)

    def register():
        config.registry.registerUtility(directory, IUserDirectory)

    config.action(IUserDirectory, register)


def user_directory(request):
    """The registered directory, or :class:`UserIds`."""
    return request.registry.queryUtility(IUserDirectory, default=_DEFAULT)


_DEFAULT = UserIds()
