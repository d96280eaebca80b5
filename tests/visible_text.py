"""What a person reads on a console page, for the language tests: the text and the
attributes a browser shows (title, placeholder, aria-label, confirmation), without scripts,
code (`<code>`, `<pre>`, `.mono` cells: machine text), free-text data the page marks
`translate="no"` (a worker's error, an audit detail) and what the page marks as English
(`lang="en"`: the API document on /api/docs)."""
from __future__ import annotations

import re
from html.parser import HTMLParser

SHOWN_ATTRIBUTES = ("title", "placeholder", "aria-label", "data-confirm", "alt")
SKIPPED_TAGS = {"script", "style", "code", "pre"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*[A-Za-z0-9]")
TEMPLATE_FIELD = re.compile(r"\{[a-z_]+\}")      # {username}: a dialogue's placeholder, code


class Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []     # open elements: tag, content skipped
        self.texts: list[str] = []

    def skipping(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        skip = (self.skipping() or tag in SKIPPED_TAGS or values.get("lang") == "en"
                or values.get("translate") == "no" or "mono" in (values.get("class") or "").split())
        if not skip:
            self.texts += [values[name] for name in SHOWN_ATTRIBUTES if values.get(name)]
            if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
                self.texts.append(values["value"])
        if tag not in VOID:
            self.stack.append((tag, skip))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        """Close `tag` and whatever was left open inside it (HTML's implied ends)."""
        if any(open_tag == tag for open_tag, _ in self.stack):
            while self.stack and self.stack.pop()[0] != tag:
                pass

    def handle_data(self, data):
        if not self.skipping() and data.strip():
            self.texts.append(data)


def visible_text(html: str, examples: frozenset[str] = frozenset()) -> str:
    """The page's visible texts, one a line, leaving out those that are exactly one of
    `examples` (a placeholder showing the syntax a field takes)."""
    reader = Reader()
    reader.feed(html)
    return "\n".join(text for text in reader.texts if text.strip() not in examples)


def english_words(html: str, allowed: set[str],
                  examples: frozenset[str] = frozenset()) -> set[str]:
    """The Latin-letter words of the page's visible text not in `allowed` (case-blind)."""
    allowed = {word.lower() for word in allowed}
    text = TEMPLATE_FIELD.sub(" ", visible_text(html, examples))
    return {word for word in WORD.findall(text) if word.lower() not in allowed}


def words_of(*texts) -> set[str]:
    """The words of some data values (names, hosts, codes), for an allow-list."""
    found = set()
    for text in texts:
        if text is not None:
            found |= set(WORD.findall(str(text)))
    return found


def console_pages(app, ran) -> list[str]:
    """Every console page a signed-in user opens with GET (not the API, downloads, health
    or the sign-in steps), with ids from `route_samples` (needs `ran` and the auditor)."""
    from tests.web_support import route_samples

    skipped = {"/", "/login/code", "/login/enrol", "/logout"}
    return [path for rule, path in route_samples(app, ran)
            if "GET" in rule.methods and not path.startswith("/api/v1")
            and path not in skipped and not path.endswith((".csv", ".json", "/metrics"))
            and not rule.endpoint.startswith("health")]
