"""``gunicorn wsgi:app``."""
from school import create_app

app = create_app()
