"""The docs name code that exists: every `module.attribute` and every file path
written in backticks in README.md and docs/ resolves, so a rename that forgets a
doc fails here instead of misleading the next reader."""

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PACKAGES = ("generation", "roadmaps", "notifications", "roadmap_project", "bench", "tests")
TOP_LEVEL = (*PACKAGES, "docs", "locale", ".ci")


def is_a_library(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # imported already, as a module without a spec (kombu's lazy one)
        return True


# Modules written without their package (`state.recover_stale`): every module name
# of the project's packages, mapped to where it lives.
MODULES: dict[str, list[str]] = {}
for package in PACKAGES[:4]:
    for source in (ROOT / package).rglob("*.py"):
        # (Not a name that is also a library's: `django.tasks` is Django's.)
        if (
            "migrations" not in source.parts
            and source.stem != "__init__"
            and not is_a_library(source.stem)
        ):
            dotted = ".".join(source.relative_to(ROOT).with_suffix("").parts)
            MODULES.setdefault(source.stem, []).append(dotted)

CODE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(rf"^(?:{'|'.join(PACKAGES + tuple(MODULES))})(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
PATH = re.compile(rf"^(?:{'|'.join(re.escape(t) for t in TOP_LEVEL)})/[\w./-]*$")
TEST_NAME = re.compile(r"^(?P<file>[\w/]+\.py)::(?P<names>[\w:]+)(?:\[[^\]]*\])?$")


def references() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for code in CODE.findall(document.read_text()):
            code = code.strip().rstrip("()")
            if DOTTED.match(code) or PATH.match(code) or TEST_NAME.match(code):
                found.append((document.relative_to(ROOT).as_posix(), code))
    return sorted(set(found))


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def exists(code: str) -> bool:
    if match := TEST_NAME.match(code):
        path = ROOT / match["file"]
        if not path.is_file():
            path = ROOT / "tests" / match["file"]  # written relative to tests/
        names = match["names"].split("::")
        text = path.read_text() if path.is_file() else ""
        return all(re.search(rf"(def|class) {re.escape(n)}\b", text) for n in names)
    if "/" in code:
        return (ROOT / code).exists()
    if code.endswith((".py", ".md", ".js", ".html")):  # a file named in its folder's context
        return any(ROOT.glob(f"*/**/{code}"))
    head, _, rest = code.partition(".")
    if head in PACKAGES:
        return resolves(code)
    return any(resolves(f"{module}.{rest}") for module in MODULES[head])


def test_docs_name_only_code_that_exists():
    missing = [f"{document}: `{code}`" for document, code in references() if not exists(code)]

    assert missing == []


def test_the_check_reads_references():
    """Guards the guard: a check that matched nothing would pass forever."""
    codes = {code for _, code in references()}

    assert len(codes) > 50
    assert "generation.services" in codes or any(c.startswith("generation.") for c in codes)
    assert any("/" in c for c in codes)
    assert not exists("generation.services.no_such_function")
    assert not exists("docs/no-such-file.md")
