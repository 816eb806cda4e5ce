"""Accounts: registration, profile changes and admin management of users."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Role, User
from app.models.types import utcnow
from app.repositories import tokens as token_repo
from app.repositories import users as user_repo
from app.services.context import passwords
from app.services.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound

USERNAME_TAKEN = "username already taken"
USER_NOT_FOUND = "user not found"


def _username_conflict() -> Conflict:
    return Conflict(USERNAME_TAKEN, errors={"username": ["already taken"]})


def _add_or_conflict(new: User) -> None:
    """Add `new` and commit; a unique-constraint race (two registrations of one name) becomes a
    409, whether the INSERT fails at the flush or at the commit."""
    try:
        user_repo.add_user(new)
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise _username_conflict() from exc


def _create_account(username: str, email: str, password: str, role: Role) -> User:
    """A new active account. Usernames are unique, case-insensitively: they are what one logs in
    with. Emails are not: an address is contact information, and refusing a taken one would tell
    anyone who tries it that the address has an account here."""
    if user_repo.username_taken(username):
        raise _username_conflict()
    user = User(
        username=username,
        email=email,
        password_hash=passwords().hash(password),
        role=role,
        is_active=True,
    )
    _add_or_conflict(user)
    return user


def register_user(username: str, email: str, password: str) -> User:
    """Self-registration: always the `user` role."""
    return _create_account(username, email, password, Role.USER)


def create_admin(username: str, email: str, password: str) -> User:
    """Bootstrap an admin account (the `flask create-admin` command)."""
    return _create_account(username, email, password, Role.ADMIN)


@dataclass(frozen=True)
class ProfileChange:
    email: str | None = None
    new_password: str | None = None
    current_password: str | None = None


def update_profile(user: User, change: ProfileChange, current_family_id: str) -> User:
    """Change one's email and/or password. A password change needs the current password and
    signs out every other session of the account. Any address is accepted, one that another
    account has too (see `_create_account`)."""
    if change.email is not None:
        user.email = change.email
    if change.new_password is not None:
        if change.current_password is None:
            raise InvalidInput(
                "current_password is required to change the password",
                errors={"current_password": ["required to change the password"]},
            )
        if not passwords().verify(user.password_hash, change.current_password):
            raise AuthenticationFailed("current password is wrong")
        user.password_hash = passwords().hash(change.new_password)
        token_repo.revoke_user_families(
            user.id, utcnow(), "password_changed", keep=current_family_id
        )
    db.session.commit()
    return user


@dataclass(frozen=True)
class AdminUserChange:
    email: str | None = None
    role: Role | None = None
    is_active: bool | None = None
    password: str | None = None


def admin_update_user(user_id: int, change: AdminUserChange) -> User:
    """Change a user's role, active flag or password. The last active admin can be neither
    demoted nor deactivated, so the service never loses its administrator."""
    user = user_repo.get_user(user_id)
    if user is None:
        raise NotFound(USER_NOT_FOUND)
    takes_rights_away = (
        change.role is not None and change.role != Role.ADMIN
    ) or change.is_active is False
    if takes_rights_away:
        # Decided on the admins as locked, not on `user` as read before the lock: a concurrent
        # change (or a retry of this one) may have demoted or promoted the user meanwhile.
        active_admins = user_repo.active_admin_ids_for_update()
        if user.id in active_admins and len(active_admins) <= 1:
            raise Conflict("cannot demote or deactivate the last active admin")
    if change.email is not None:
        user.email = change.email
    if change.role is not None:
        user.role = change.role
    if change.is_active is not None:
        user.is_active = change.is_active
        if not change.is_active:
            token_repo.revoke_user_families(user.id, utcnow(), "deactivated")
    if change.password is not None:
        user.password_hash = passwords().hash(change.password)
        token_repo.revoke_user_families(user.id, utcnow(), "password_reset")
    db.session.commit()
    return user
