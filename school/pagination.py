"""A page of a list that is not a database query (cached rows, files on disk), shaped like
Flask-SQLAlchemy's pagination so the same pager template serves every list."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    items: list
    page: int
    per_page: int
    total: int
    # False when ``total`` is a lower bound: the list was counted only so far past this page.
    exact: bool = True

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def prev_num(self) -> int | None:
        return self.page - 1 if self.has_prev else None

    @property
    def next_num(self) -> int | None:
        return self.page + 1 if self.has_next else None
