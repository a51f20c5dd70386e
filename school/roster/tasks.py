"""The roster's Huey task: run one import by its id."""
from ..queue import app_context, huey
from . import imports


@huey.task()
def run_import(import_id: int) -> None:
    with app_context():
        imports.run(import_id)
