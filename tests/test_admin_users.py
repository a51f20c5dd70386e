"""Admins manage who may log in: list, add, change roles, deactivate (never themselves)."""
import pytest
from sqlalchemy import select

from school.auth.models import User
from school.extensions import db

from tests.support.accounts import AuthActions, Login, issue_token
from tests.support.pages import field_error, parse


@pytest.fixture
def admin(session_as, admin_user) -> AuthActions:
    return session_as(admin_user)


def user_id(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email))


def row(response, uid: int):
    return parse(response.data).by_id(f"user-{uid}")


def test_admin_sees_every_user_with_role_and_status(app, admin, admin_user, staff_user):
    page = admin.client.get("/admin/users")
    assert page.status_code == 200
    staff_row = row(page, user_id(app, staff_user.email))
    assert staff_user.email in staff_row.text and "staff" in staff_row.text and "active" in staff_row.text
    own_row = row(page, user_id(app, admin_user.email))
    assert "(you)" in own_row.text
    assert own_row.find("form") is None, "no controls on one's own account"


def test_admin_adds_a_user_who_can_then_log_in(app, admin, session_as):
    response = admin.post("/admin/users", {"email": "Nurse@School.example.org", "password": "first-aid-kit",
                                           "role": "staff"})
    assert response.status_code == 302
    assert "Created staff nurse@school.example.org." in admin.client.get("/admin/users").get_data(as_text=True)
    nurse = session_as(Login("nurse@school.example.org", "first-aid-kit", "staff"))
    assert nurse.client.get("/events/new").status_code == 200
    assert nurse.client.get("/admin/users").status_code == 403


def test_invalid_new_user_is_shown_beside_each_field_and_not_saved(admin, row_count):
    before = row_count(User)
    response = admin.post("/admin/users", {"email": "not-an-address", "password": "short", "role": "owner"})
    assert response.status_code == 422
    assert field_error(response.data, "email").startswith("Not a valid email address")
    assert field_error(response.data, "password") == "The password needs at least 8 characters."
    assert field_error(response.data, "role") == "Role must be one of admin, staff."
    assert parse(response.data).find("input", name="email").attrs["value"] == "not-an-address"
    assert row_count(User) == before


def test_adding_an_existing_email_does_not_reset_that_users_password(admin, staff_user, session_as, row_count):
    before = row_count(User)
    response = admin.post("/admin/users", {"email": staff_user.email, "password": "hijacked-password",
                                           "role": "admin"})
    assert response.status_code == 422
    assert field_error(response.data, "email") == f"There is already a user {staff_user.email}."
    assert row_count(User) == before
    staff = session_as(staff_user)  # the old password still works
    assert staff.client.get("/admin/users").status_code == 403, "and the role is unchanged"


def test_admin_promotes_staff_to_admin(app, admin, staff_user, session_as):
    staff = session_as(staff_user)
    assert staff.client.get("/admin/users").status_code == 403
    response = admin.post(f"/admin/users/{user_id(app, staff_user.email)}", {"role": "admin"})
    assert response.status_code == 302
    assert staff.client.get("/admin/users").status_code == 200


def test_deactivated_user_is_logged_out_and_cannot_log_in_or_use_tokens(app, admin, staff_user, session_as):
    staff = session_as(staff_user)
    bearer = {"Authorization": f"Bearer {issue_token(app, staff_user.email)}"}
    assert staff.client.get("/api/jobs", headers=bearer).status_code == 200

    uid = user_id(app, staff_user.email)
    assert admin.post(f"/admin/users/{uid}", {"active": "0"}).status_code == 302
    assert "deactivated" in row(admin.client.get("/admin/users"), uid).text
    assert staff.client.get("/").status_code == 302, "the open session ends"
    assert staff.login(staff_user.email, staff_user.password).status_code == 401
    assert staff.client.get("/api/jobs", headers=bearer).status_code == 401

    assert admin.post(f"/admin/users/{uid}", {"active": "1"}).status_code == 302
    staff.login_as(staff_user)
    assert staff.client.get("/").status_code == 200


@pytest.mark.parametrize("change", [{"active": "0"}, {"role": "staff"}])
def test_admin_cannot_change_their_own_account(app, admin, admin_user, change):
    uid = user_id(app, admin_user.email)
    response = admin.post(f"/admin/users/{uid}", change)
    assert response.status_code == 422
    assert parse(response.data).by_id(f"user-{uid}-error").text == (
        "You cannot change your own role or deactivate yourself.")
    assert admin.client.get("/admin/users").status_code == 200, "still an active admin"


def test_unknown_role_or_user_changes_nothing(app, admin, staff_user):
    uid = user_id(app, staff_user.email)
    response = admin.post(f"/admin/users/{uid}", {"role": "owner"})
    assert response.status_code == 422
    assert parse(response.data).by_id(f"user-{uid}-error").text == "Role must be one of admin, staff."
    assert admin.post(f"/admin/users/{uid}", {"active": "maybe"}).status_code == 400
    assert admin.post("/admin/users/999999", {"active": "0"}).status_code == 404
    assert "staff" in row(admin.client.get("/admin/users"), uid).text
