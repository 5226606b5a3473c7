"""The demo's users, as the session report asks about them (``IUserDirectory``).

Each answer uses a short database session of its own, not the request's: a
CSV export still asks for names while it streams, after the request's
transaction has ended.
"""
from __future__ import annotations

from sqlalchemy import select

from .models import User, authenticate


class AppUserDirectory:
    def __init__(self, session_factory):
        self.session_factory = session_factory

    def names(self, request, user_ids):
        ids = [int(user_id) for user_id in user_ids if str(user_id).isdigit()]
        with self.session_factory() as db:
            rows = db.execute(select(User.id, User.username).where(User.id.in_(ids)))
            return {str(user_id): username for user_id, username in rows}

    def find(self, request, name):
        with self.session_factory() as db:
            user_id = db.scalar(select(User.id).where(User.username == name))
        return None if user_id is None else str(user_id)

    def verify_password(self, request, user_id, password):
        with self.session_factory() as db:
            user = db.get(User, int(user_id)) if str(user_id).isdigit() else None
            return user is not None and authenticate(db, user.username, password) is not None
