"""MkDocs hooks of the documentation site: pages mirrored from the repository, generated at build time.

Nothing here is copied into ``docs/`` by hand, so the site cannot drift from the sources:

- **Bundle pages** — ``bundles/<name>/docs/README.md`` of every bundle becomes ``bundles/<name>.md`` (nav section
  "Bundles", in pipeline order) with a header from the bundle's ``configs/metadata.json`` (version, task). Bundles
  without a README yet are listed in the overview table only.
- **Mirrors** — a line ``<!-- mirror: path/in/repo.md -->`` in a page is replaced by that file's text (headings
  shifted one level down).
- **API reference** — ``api/<package>.md`` for every subpackage of ``monai_dclcstp``: the package docstring, then
  one mkdocstrings block per module (found on disk, so new modules appear without editing anything).
- **Optional pages** — nav entries for pages owned by someone else that may not exist yet (``benchmarks.md``) are
  dropped when the file is missing, instead of failing ``mkdocs build --strict``.

Relative links in mirrored text are rewritten: links to another mirrored README point to its page, links to other
repository files get a copy of that file in the site under ``repo/`` (images and configs render or download), and
links to folders become code spans. A link to a file that does not exist is left alone, so ``--strict`` reports it.
"""

from __future__ import annotations

import ast
import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.monai_dclcstp")

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "monai_dclcstp"
#: pipeline order of the bundles in the nav; unknown bundles follow alphabetically
BUNDLE_ORDER = ("pretrain", "ldm", "classification", "segmentation")
BUNDLES_NAV_TITLE = "Bundles"
API_NAV_TITLE = "API reference"
#: pages owned by other work streams: dropped from the nav while missing
OPTIONAL_PAGES = ("benchmarks.md",)
#: repository markdown files that have a page of their own (repo path → page path)
STATIC_PAGE_FOR = {"README.md": "index.md", f"{PACKAGE}/data/README.md": "data-formats.md"}

MIRROR_RE = re.compile(r"^<!--\s*mirror:\s*(?P<path>\S+)\s*-->\s*$")
BUNDLE_TABLE_MARKER = "<!-- bundle-table -->"
MULTI_GPU_MARKER = "<!-- multi-gpu-status -->"
LINK_RE = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
#: Sphinx roles left in docstrings, as rendered by mkdocstrings: ``:class:<code>~a.b.C</code>``
ROLE_RE = re.compile(
    r":(?:py:)?(?:mod|func|class|meth|data|attr|obj|exc|const):<code>(?P<tilde>~?)(?P<target>[\w.]+)</code>"
)


# ----------------------------------------------------------------------------------------------------------- helpers
def bundle_names() -> list[str]:
    """Bundle folders (those with a ``configs/`` folder), in pipeline order."""
    root = REPO_ROOT / "bundles"
    found = sorted(p.name for p in root.iterdir() if (p / "configs").is_dir()) if root.is_dir() else []
    return [b for b in BUNDLE_ORDER if b in found] + [b for b in found if b not in BUNDLE_ORDER]


def bundle_readme(name: str) -> Path:
    return REPO_ROOT / "bundles" / name / "docs" / "README.md"


def bundle_metadata(name: str) -> dict[str, Any]:
    path = REPO_ROOT / "bundles" / name / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def page_for_repo_file(rel: str) -> str | None:
    """Site page (docs-relative) that renders repository file ``rel``, if any."""
    if rel in STATIC_PAGE_FOR:
        return STATIC_PAGE_FOR[rel]
    parts = rel.split("/")
    if len(parts) == 4 and parts[0] == "bundles" and parts[2:] == ["docs", "README.md"]:
        return f"bundles/{parts[1]}.md" if bundle_readme(parts[1]).is_file() else None
    if parts[0] == "docs" and len(parts) > 1:  # a page or an image of the site itself
        return "/".join(parts[1:])
    return None


class _Mirror:
    """Rewrites the relative links of one mirrored file and remembers which repository files the site must carry."""

    def __init__(self, source_rel: str, page_rel: str, assets: set[str]) -> None:
        self.source_dir = posixpath.dirname(source_rel)
        self.page_dir = posixpath.dirname(page_rel)
        self.assets = assets

    def link(self, match: re.Match) -> str:
        target = match.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        rel = posixpath.normpath(posixpath.join(self.source_dir, path))
        anchor = f"#{anchor}" if anchor else ""
        page = page_for_repo_file(rel)
        if page is not None:
            new = posixpath.relpath(page, self.page_dir or ".") + anchor
        elif (REPO_ROOT / rel).is_file() and not rel.startswith(".."):
            self.assets.add(rel)
            new = posixpath.relpath(f"repo/{rel}", self.page_dir or ".") + anchor
        elif (REPO_ROOT / rel).is_dir() and not match.group("bang"):
            return f"{match.group('text')} (`{rel}/`)" if match.group("text") != rel else f"`{rel}/`"
        else:  # missing: keep it, so that --strict names the broken link
            return match.group(0)
        return f"{match.group('bang')}[{match.group('text')}]({new}{match.group('title') or ''})"

    def convert(self, text: str, heading_offset: int = 0) -> str:
        out, fenced = [], False
        for line in text.splitlines():
            if FENCE_RE.match(line):
                fenced = not fenced
            elif not fenced:
                if heading_offset and re.match(r"^#{1,5} ", line):
                    line = "#" * heading_offset + line
                line = LINK_RE.sub(self.link, line)
            out.append(line)
        return "\n".join(out) + "\n"


def _api_page(package: str) -> str:
    """Markdown of ``api/<package>.md``: package docstring, then every public module of the package (recursively)."""
    root = REPO_ROOT / PACKAGE / package
    lines = [
        f"# `{PACKAGE}.{package}`",
        "",
        f"::: {PACKAGE}.{package}",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "",
    ]
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT / PACKAGE).with_suffix("")
        if any(part.startswith("_") and part != "__init__" for part in rel.parts) or "__pycache__" in path.parts:
            continue
        if rel.name == "__init__":
            if rel.parent == Path(package):
                continue
            module = ".".join((PACKAGE, *rel.parent.parts))
            lines += [f"::: {module}", "    options:", "      members: false", ""]
            continue
        module = ".".join((PACKAGE, *rel.parts))
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def api_packages() -> list[str]:
    root = REPO_ROOT / PACKAGE
    return sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("_"))


def _nav_entry_path(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        value = next(iter(entry.values()))
        return value if isinstance(value, str) else None
    return None


def _find_section(nav: list, title: str) -> list | None:
    for entry in nav:
        if isinstance(entry, dict) and title in entry and isinstance(entry[title], list):
            return entry[title]
    return None


class _GroupedParamsFilter(logging.Filter):
    """Demote griffe's warning about MONAI-style grouped parameters wrapped over two lines to INFO.

    ``a, b, c,\n    d: as in X`` is how MONAI documents parameters passed through; griffe renders it, but warns that
    the first line has no ``name: description`` pair. Every other docstring warning still fails ``--strict``.
    """

    pattern = re.compile(r"Failed to get 'name: description' pair from '[\w\s]+(,[\w\s]*)+'")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and self.pattern.search(record.getMessage()):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_OBJECT_INDEX: tuple[dict[str, str], dict[str, str]] | None = None


def object_index() -> tuple[dict[str, str], dict[str, str]]:
    """``(path → canonical path, unique short name → canonical path)`` of the package's public objects (griffe)."""
    global _OBJECT_INDEX
    if _OBJECT_INDEX is not None:
        return _OBJECT_INDEX
    import griffe

    package = griffe.load(PACKAGE, search_paths=[str(REPO_ROOT)], allow_inspection=False)
    paths: dict[str, str] = {}
    short: dict[str, set[str]] = {}

    def walk(obj) -> None:
        for name, member in obj.members.items():
            if name.startswith("_"):
                continue
            path = f"{obj.path}.{name}"
            if member.is_alias:
                if member.target_path.startswith(PACKAGE + "."):
                    paths[path] = member.target_path
                continue
            paths[path] = member.path
            short.setdefault(name, set()).add(member.path)
            if member.is_module or member.is_class:
                walk(member)

    walk(package)
    for path in paths:  # aliases of aliases (package re-exports of subpackage re-exports)
        for _ in range(5):
            target = paths[path]
            if paths.get(target, target) == target:
                break
            paths[path] = paths[target]
    _OBJECT_INDEX = (paths, {name: next(iter(p)) for name, p in short.items() if len(p) == 1})
    return _OBJECT_INDEX


def _link_role(match: re.Match) -> str:
    target = match.group("target")
    label = target.rsplit(".", 1)[-1] if match.group("tilde") else target
    paths, short = object_index()
    identifier = paths.get(target) or short.get(target)
    if identifier is None and "." in target:  # Class.method
        head, _, tail = target.partition(".")
        owner = paths.get(head) or short.get(head)
        identifier = paths.get(f"{owner}.{tail}") if owner else None
    if identifier is None:
        return f"<code>{label}</code>"
    return f'<autoref identifier="{identifier}" optional><code>{label}</code></autoref>'


# ------------------------------------------------------------------------------------------------------------- hooks
def on_startup(**kwargs):
    griffe_logger = logging.getLogger("mkdocs.plugins.griffe")
    if not any(isinstance(f, _GroupedParamsFilter) for f in griffe_logger.filters):
        griffe_logger.addFilter(_GroupedParamsFilter())


def on_config(config, **kwargs):
    nav = config.get("nav")
    if not nav:
        return config
    docs_dir = Path(config["docs_dir"])
    # optional pages owned by others
    for page in OPTIONAL_PAGES:
        if not (docs_dir / page).is_file():
            nav[:] = [e for e in nav if _nav_entry_path(e) != page]
            log.info("%s does not exist yet: left out of the nav", page)
    # bundles with a README, after the static entries of the section (the overview page)
    section = _find_section(nav, BUNDLES_NAV_TITLE)
    if section is not None:
        for name in bundle_names():
            if bundle_readme(name).is_file():
                title = bundle_metadata(name).get("name") or name
                section.append({f"{name}: {title}" if title != name else name: f"bundles/{name}.md"})
    # API reference: one page per subpackage
    section = _find_section(nav, API_NAV_TITLE)
    if section is not None:
        for package in api_packages():
            section.append({package: f"api/{package}.md"})
    return config


def on_files(files: Files, config, **kwargs) -> Files:
    assets: set[str] = set()
    for name in bundle_names():
        readme = bundle_readme(name)
        if not readme.is_file():
            continue
        page = f"bundles/{name}.md"
        source_rel = readme.relative_to(REPO_ROOT).as_posix()
        meta = bundle_metadata(name)
        body = _Mirror(source_rel, page, assets).convert(readme.read_text(encoding="utf-8"))
        note = [f'!!! info "Bundle `bundles/{name}`"']
        if meta.get("version"):
            note.append(f"    Version {meta['version']} (`configs/metadata.json`).")
        note.append(f"    This page is the bundle's own `{source_rel}`, rendered at build time.")
        configs = sorted(p.name for p in (REPO_ROOT / "bundles" / name / "configs").glob("*.json"))
        if configs:
            note.append("    Configs: " + ", ".join(f"`{c}`" for c in configs) + ".")
        files.append(File.generated(config, page, content="\n".join(note) + "\n\n" + body))
    for package in api_packages():
        files.append(File.generated(config, f"api/{package}.md", content=_api_page(package)))
    config["_dclcstp_assets"] = assets
    return files


def on_page_markdown(markdown: str, page, config, files: Files, **kwargs) -> str:
    assets: set[str] = config.get("_dclcstp_assets", set())
    if BUNDLE_TABLE_MARKER in markdown:
        markdown = markdown.replace(BUNDLE_TABLE_MARKER, _bundle_table(page.file.src_uri))
    if MULTI_GPU_MARKER in markdown:
        markdown = markdown.replace(MULTI_GPU_MARKER, _multi_gpu_status())
    if "<!-- mirror:" in markdown:
        out = []
        for line in markdown.splitlines():
            match = MIRROR_RE.match(line.strip())
            if match is None:
                out.append(line)
                continue
            rel = match.group("path")
            source = REPO_ROOT / rel
            if not source.is_file():
                raise FileNotFoundError(f"{page.file.src_uri}: mirrored file {rel} does not exist")
            out.append(_Mirror(rel, page.file.src_uri, assets).convert(source.read_text(encoding="utf-8"), 1))
        markdown = "\n".join(out)
    # repository files linked from mirrored text: add them to the site (only once each)
    for rel in sorted(assets):
        uri = f"repo/{rel}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(REPO_ROOT / rel)))
    return markdown


def on_page_content(html: str, page, config, files: Files, **kwargs) -> str:
    """Turn the Sphinx roles of the docstrings into links to the API pages (plain code when not ours)."""
    return ROLE_RE.sub(_link_role, html) if ":<code>" in html else html


def _bundle_table(page_uri: str) -> str:
    rows = ["| bundle | what it does | version | documentation |", "|---|---|---|---|"]
    page_dir = posixpath.dirname(page_uri)
    for name in bundle_names():
        meta = bundle_metadata(name)
        task = str(meta.get("task") or meta.get("name") or "").replace("|", "\\|")
        version = meta.get("version", "")
        if bundle_readme(name).is_file():
            doc = f"[bundles/{name}]({posixpath.relpath(f'bundles/{name}.md', page_dir or '.')})"
        else:
            doc = "README not written yet"
        rows.append(f"| `{name}` | {task} | {version} | {doc} |")
    return "\n".join(rows)


def _dist_tests(name: str) -> str:
    """``tests/bundles/test_<name>_dist.py``: how many of its tests run by default (CI) and how many are ``slow``."""
    rel = f"tests/bundles/test_{name}_dist.py"
    path = REPO_ROOT / rel
    if not path.is_file():
        return "none"
    tests = [
        node
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    ]
    slow = sum(any("mark.slow" in ast.unparse(d) for d in node.decorator_list) for node in tests)
    return f"`{rel}`: {len(tests) - slow} in CI, {slow} slow"


def _multi_gpu_status() -> str:
    """Which bundles ship ``configs/multi_gpu_train.json``, which ids it sets and its torchrun tests (from the files)."""
    rows = [
        "| bundle | `multi_gpu_train.json` | ids it sets | 2-process torchrun tests (gloo, CPU) |",
        "|---|---|---|---|",
    ]
    shipped = 0
    for name in bundle_names():
        path = REPO_ROOT / "bundles" / name / "configs" / "multi_gpu_train.json"
        if path.is_file():
            shipped += 1
            try:
                keys = ", ".join(f"`{k}`" for k in json.loads(path.read_text()))
            except ValueError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from e
            rows.append(f"| `{name}` | yes | {keys} | {_dist_tests(name)} |")
        else:
            rows.append(f"| `{name}` | not yet | | {_dist_tests(name)} |")
    table = "\n".join(rows)
    if shipped:
        return table + "\n\n*Generated at build time from the bundles' config files.*\n"
    return (
        '!!! warning "Planned"\n'
        "    No bundle ships a `configs/multi_gpu_train.json` yet. The command below is the intended use, following the\n"
        "    Model Zoo; the library pieces it relies on (listed further down) exist and are tested. This notice and the\n"
        "    table are generated from the bundle folders at build time, so they change when the files land.\n\n"
        + table
        + "\n"
    )
