"""Reading rendered pages the way a browser would: by element, id and text, not by regex."""
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list["Element | str"] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The visible text, with runs of whitespace collapsed."""
        parts = []

        def walk(node):
            for child in node.children:
                if isinstance(child, str):
                    parts.append(child)
                else:
                    walk(child)

        walk(self)
        return " ".join("".join(parts).split())

    def iter(self):
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs) -> list["Element"]:
        """Elements with this tag and these attribute values (``class_`` for ``class``)."""
        wanted = {name.rstrip("_").replace("_", "-") if name != "class_" else "class": value
                  for name, value in attrs.items()}
        return [el for el in self.iter()
                if (tag is None or el.tag == tag)
                and all(el.attrs.get(name) == value for name, value in wanted.items())]

    def find(self, tag: str | None = None, **attrs) -> "Element | None":
        found = self.find_all(tag, **attrs)
        return found[0] if found else None

    def by_id(self, element_id: str) -> "Element | None":
        return self.find(id=element_id)

    def has_class(self, name: str) -> bool:
        return name in (self.attrs.get("class") or "").split()


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str | bytes) -> Element:
    if isinstance(html, bytes):
        html = html.decode()
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def csrf_token(html: str | bytes) -> str:
    """The CSRF token a page carries, from its form field or the meta tag htmx reads."""
    page = parse(html)
    field_ = page.find("input", name="csrf_token")
    if field_ is not None and field_.attrs.get("value"):
        return field_.attrs["value"]
    meta = page.find("meta", name="csrf-token")
    if meta is not None and meta.attrs.get("content"):
        return meta.attrs["content"]
    raise AssertionError("the page carries no CSRF token")


def field_error(html: str | bytes, name: str) -> str | None:
    """The message shown beside a form field, or None when the field has none."""
    element = parse(html).by_id(f"{name}-error")
    return element.text if element is not None else None
