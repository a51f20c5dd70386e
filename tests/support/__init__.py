"""What the tests run against, by concern.

The fixture modules are loaded as plugins by ``tests/conftest.py``:

- ``redis``: a throwaway ``redis-server`` process (``redis_server``)
- ``smtp``: an SMTP server that records what it receives (``smtp_server``, ``silent_listener``)
- ``consumers``: ``huey_consumer`` processes running the real tasks (``consumer``)
- ``school``: apps, their settings and databases (``app_on``, ``pg_url``, ``db_url``, ``make_school``)
- ``browser``: the app served over HTTP and a real Chromium (``live_server``, ``chromium``)

Plain helpers, imported by the tests that need them:

- ``host``: paths, a free loopback port, a clean environment, waiting for something to happen
- ``accounts``: who logs in (``ADMIN``, ``STAFF``) and logging in through the form (``AuthActions``)
- ``pages``: reading rendered HTML by element, id and text
- ``faults``: counting what a fault did to a job (the reliability tests)
- ``migrations``: upgrading a database that holds data (``upgrade_holding``, ``SENT_NOTICE``)

Nothing here is a mock: every queue, limit and retry is exercised through the same processes and
protocols production uses, on 127.0.0.1 only.
"""
