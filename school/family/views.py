"""The family's pages, reached by the personal link in each email: no login, only that link's data.

Plain HTML forms (Flask-WTF's CSRF token, which the page's own session carries); the one-click
unsubscribe of RFC 8058 is a POST from a mail provider without cookies, so it alone is exempt.
"""
from flask import Blueprint, abort, current_app, flash, g, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _, refresh

from ..events.calendar import ics
from ..events.translations import EventText
from ..i18n import from_browser, period
from ..notify.letter import sender_domain
from . import limit, preferences, services

bp = Blueprint("family", __name__)

NOT_FOUND = "No such page."


def _speak(locale: str) -> None:
    """Write this page in ``locale`` (Flask-Babel reads ``g.locale``; see ``i18n.select_locale``)."""
    g.locale = locale
    refresh()


@bp.before_request
def limit_per_address():
    # Until a notice says whose page this is, the browser's language (if the school speaks it).
    _speak(from_browser(current_app.config["SCHOOL_LANGUAGE"]))
    if not limit.allowed():
        return make_response(render_template("family/message.html", title=_("Too many requests"),
                                             message=_("Too many requests from your address. "
                                                       "Wait a minute and try again.")),
                             429, {"Retry-After": "60"})
    return None


@bp.after_request
def private(response):
    """Nobody indexes these pages or learns their address from a link followed out of them."""
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _notice(token: str) -> services.Notice | None:
    """The token's notice; a 404 that says nothing for a bad token; None (and g.expired) for a purged one."""
    try:
        found = services.notice(token)
    except services.UnknownNotice:
        abort(404)
    except services.ExpiredNotice:
        return None
    _speak(found.language)
    return found


def _expired():
    return render_template("family/message.html", title=_("Notice expired"),
                           message=_("This notice has expired: the school no longer keeps its details."))


def _notice_page(found: services.Notice, status: int = 200, **extra):
    """The notice in the family's language: staff's translation, or the original with a line
    saying which language it is written in."""
    event = EventText(found.event, g.locale)
    others = [{**other, "title": EventText(other["event"], g.locale).title} for other in services.other_notices(found)]
    return render_template("family/notice.html", n=found, event=event, notice_line=event.notice_line(),
                           when=period(event.starts_at, event.ends_at, g.locale), others=others,
                           answers=services.RSVP_ANSWERS, answer_label=services.answer_label, **extra), status


@bp.get("/n/<token>")
def notice(token: str):
    found = _notice(token)
    if found is None:
        return _expired()
    return _notice_page(found)


@bp.get("/n/<token>/event.ics")
def calendar(token: str):
    found = _notice(token)
    if found is None:
        return _expired()
    url = url_for("family.notice", token=token, _external=True)
    event = EventText(found.event, g.locale)
    return current_app.response_class(ics(event, sender_domain(), url, note=event.notice_line()),
                                      mimetype="text/calendar",
                                      headers={"Content-Disposition": 'attachment; filename="event.ics"'})


@bp.post("/n/<token>/ack")
def acknowledge(token: str):
    found = _notice(token)
    if found is None:
        return _expired()
    services.acknowledge(found)
    flash(_("Thank you: the school knows you have read this notice."))
    return redirect(url_for("family.notice", token=token))


@bp.post("/n/<token>/rsvp")
def rsvp(token: str):
    found = _notice(token)
    if found is None:
        return _expired()
    try:
        services.answer_rsvp(found, request.form.get("answer", ""))
    except ValueError as exc:
        return _notice_page(found, 422, rsvp_error=str(exc))
    flash(_("Your answer: %(answer)s. You can change it until the event starts.",
            answer=services.answer_label(found.recipient.rsvp)))
    return redirect(url_for("family.notice", token=token))


@bp.route("/n/<token>/preferences", methods=["GET", "POST"])
def preferences_page(token: str):
    found = _notice(token)
    if found is None:
        return _expired()
    email = found.recipient.email
    error = None
    if request.method == "POST":
        try:
            if "language" in request.form:  # the undo button sends only the notices' choice
                preferences.set_language(email, request.form["language"])
        except ValueError:
            error = _("Choose one of the languages listed.")
        else:
            preferences.set_normal_notices(email, request.form.get("normal") == "on")
            _speak(found.language)  # the new choice, if it changed
            flash(_("Your choices are saved."))
            return redirect(url_for("family.preferences_page", token=token))
    chosen = preferences.preference(email)
    return render_template("family/preferences.html", n=found, chosen=chosen, languages=preferences.LANGUAGES,
                           current=found.language, error=error), 422 if error else 200


@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    """RFC 8058: a mail provider POSTs ``List-Unsubscribe=One-Click`` here, without cookies; a person
    who opens the link gets the same result and a way to undo it."""
    found = _notice(token)
    if found is None:
        return _expired()
    preferences.set_normal_notices(found.recipient.email, False)
    if request.method == "POST":
        return render_template("family/message.html", title=_("Unsubscribed"),
                               message=_("You will no longer receive normal notices. Urgent notices are always sent."))
    return render_template("family/unsubscribed.html", n=found)
