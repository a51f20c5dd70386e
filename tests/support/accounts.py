"""Who logs in, and logging in through the real form (CSRF token included) with the test client.

``ADMIN`` is the admin of every test's school (``make_school``) and the ``admin_user`` fixture;
``STAFF`` is the ``staff_user`` fixture. The browser logs in with the same credentials
(``tests.support.browser.log_in``).
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from .pages import csrf_token


@dataclass(frozen=True)
class Login:
    email: str
    password: str
    role: str


ADMIN_EMAIL = "admin@springfield-school.example.org"
ADMIN_PASSWORD = "correct horse battery staple"
ADMIN = Login(ADMIN_EMAIL, ADMIN_PASSWORD, "admin")
STAFF = Login("office@springfield-school.example.org", "staff-password-1", "staff")


def add_user(app, user: Login) -> Login:
    """Create (or update) that user in the app's database."""
    from school.auth.services import save_user

    with app.app_context():
        save_user(user.email, user.password, user.role)
    return user


def issue_token(app, email: str) -> str:
    """A new API token for the user with that address; the secret the caller sends."""
    from school.auth.models import ApiToken, User
    from school.extensions import db

    with app.app_context():
        token, secret = ApiToken.issue(db.session.scalar(select(User).where(User.email == email)))
        db.session.add(token)
        db.session.commit()
    return secret


class AuthActions:
    """Log in and out through the real form, CSRF token included."""

    def __init__(self, client):
        self.client = client

    @classmethod
    def logged_in(cls, app, user: Login = ADMIN) -> "AuthActions":
        """Another browser (a new test client), logged in as ``user``."""
        actions = cls(app.test_client())
        actions.login_as(user)
        return actions

    def csrf(self, path: str = "/") -> str:
        """The token a browser would have from this page (anonymous users land on the login form)."""
        response = self.client.get(path, follow_redirects=True)
        assert response.status_code == 200, f"GET {path} gave {response.status_code}"
        return csrf_token(response.data)

    def post(self, path: str, data: dict | None = None, **kwargs):
        """Submit a form as the page would, with the session's CSRF token."""
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf()}, **kwargs)

    def login(self, email: str, password: str, **params):
        return self.post("/login", {"email": email, "password": password}, query_string=params)

    def login_as(self, user: Login):
        response = self.login(user.email, user.password)
        assert response.status_code == 302, f"{user.email} could not log in"
        return response

    def logout(self):
        return self.post("/logout")
