"""``flask --app app …``: the development server and the command line."""
from school import create_app

app = create_app()
