"""Audiences by school through the API and the event form, on an imported two-school roster."""
import pytest

from school.roster.importer import import_roster

from tests.support.roster import first_bundle, write_bundle

EVENT = {"title": "Open day", "starts_at": "2031-06-12T09:00:00Z", "ends_at": "2031-06-12T15:00:00Z"}


@pytest.fixture
def district(make_school, tmp_path):
    school = make_school()
    with school.app.app_context():
        assert not import_roster(write_bundle(tmp_path / "a", first_bundle())).refused
    return school


def test_the_api_takes_schools_by_identifier_or_source_id(district):
    for schools in (["N"], ["s-south"], ["N", "S"]):
        response = district.api("POST", "/api/events", json={**EVENT, "audience": {
            "roles": ["guardians"], "grades": [7], "classes": [], "schools": schools}})
        assert response.status_code == 202, response.get_json()


def test_the_api_names_unknown_schools_and_classes_outside_the_chosen_schools(district):
    response = district.api("POST", "/api/events", json={**EVENT, "audience": {
        "roles": ["guardians"], "schools": ["Atlantis", 3]}})
    assert response.status_code == 422 and response.get_json()["fields"] == {"schools": "must be a list of text"}
    response = district.api("POST", "/api/events", json={**EVENT, "audience": {
        "roles": ["guardians"], "schools": ["Atlantis"]}})
    assert response.status_code == 422 and response.get_json()["fields"] == {"schools": "Unknown school: Atlantis"}
    response = district.api("POST", "/api/events", json={**EVENT, "audience": {
        "roles": ["guardians"], "classes": ["ART-1"], "schools": ["N"]}})
    assert response.get_json()["fields"] == {"classes": "Unknown class: ART-1"}  # ART-1 is South's


def test_the_form_offers_schools_and_both_kinds_of_class(district):
    client = district.admin().client
    html = client.get("/events/new").get_data(as_text=True)
    assert 'name="schools" value="N"' in html and "North School" in html and "South School" in html
    assert 'value="MATH7-1"' in html and "scheduled:" in html
    reach = client.get("/events/reach?roles=guardians&classes=7A&schools=N").get_data(as_text=True)
    assert "Reaches 1 guardians" in reach
