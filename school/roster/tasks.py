"""The roster's Huey tasks: run one import by its id, and pick up imports the queue lost."""
from huey import crontab

from ..queue import app_context, huey
from . import imports


@huey.task()
def run_import(import_id: int) -> None:
    with app_context():
        imports.run(import_id)


@huey.periodic_task(crontab(minute="*/5"))
def sweep_imports() -> None:
    with app_context():
        for import_id in imports.stale():
            run_import(import_id)
