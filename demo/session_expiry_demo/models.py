"""The application database: users (the session tables come with the SQL store)."""
from __future__ import annotations

import contextlib
import functools
from datetime import UTC, datetime
from typing import ClassVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both answers take as long.

    Made on first use, not at import: hashing takes Argon2's 64 MiB, and processes
    that import the models without checking a password (``session-sweeper``) keep
    their peak memory small."""
    return _hasher.hash("not a real password")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    # Ids are never reused (PostgreSQL sequences never do): see migration 0003.
    __table_args__: ClassVar[dict] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC))

    def set_password(self, password: str) -> None:
        self.password_hash = _hasher.hash(password)

    def check_password(self, password: str) -> bool:
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def authenticate(dbsession, username: str, password: str) -> User | None:
    """The user with these credentials, or None (in constant time either way)."""
    # No user name holds a NUL, and PostgreSQL refuses one in a query's text.
    user = (None if "\x00" in username
            else dbsession.scalar(select(User).where(User.username == username)))
    if user is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), password)
        return None
    return user if user.check_password(password) else None
