"""docs/CONFIGURATION.md lists every variable the code reads, and names nothing that is not read.

The variables come from the code itself: every pydantic settings class of `shared/` and
`services/` (found by import, not by a list kept here), the environment reads of the Python
code, the `${VAR:-default}` overrides of the infra scripts, compose's `${VAR}` and the Makefile's
`$(VAR)`. So a new setting without documentation, or documentation of a setting that is gone,
fails here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "CONFIGURATION.md"
_NAME = r"[A-Z][A-Z0-9_]*"
_CLASS_OF_SETTINGS = re.compile(r"^class \w+\([\w.]*Settings\):", re.MULTILINE)
# os.environ.get("X"), os.environ["X"] (not an assignment), os.getenv("X"); either quote.
_PY_READS = (
    re.compile(rf"environ\.get\(\s*[\"']({_NAME})[\"']"),
    re.compile(rf"environ\[\s*[\"']({_NAME})[\"']\s*\](?!\s*=[^=])"),
    re.compile(rf"getenv\(\s*[\"']({_NAME})[\"']"),
)
_SHELL_OVERRIDE = re.compile(rf"\$\{{({_NAME}):?[-=]")
_COMPOSE_VAR = re.compile(rf"(?<!\$)\$\{{({_NAME})")
_MAKE_VAR = re.compile(rf"\$\(({_NAME})\)")
_MAKE_ASSIGNED = re.compile(rf"^({_NAME})\s*[:?+]?=", re.MULTILINE)


def _settings_classes() -> list[type[BaseSettings]]:
    """Every BaseSettings subclass defined in shared/ or services/ (modules imported first)."""
    for path in sorted(
        [*REPO.joinpath("shared").rglob("*.py"), *REPO.joinpath("services").rglob("*.py")]
    ):
        if path.name != "__main__.py" and _CLASS_OF_SETTINGS.search(path.read_text()):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            importlib.import_module(module)

    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return [
        c for c in subclasses(BaseSettings) if c.__module__.startswith(("shared.", "services."))
    ]


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads, as pydantic-settings resolves them."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias)
        elif field.alias:
            names.add(field.alias)
        else:
            names.add(f"{prefix}{field_name}")
    return {n.upper() for n in names}


def settings_variables() -> dict[str, str]:
    """Variable -> the settings class that reads it (the first one found)."""
    found: dict[str, str] = {}
    for cls in _settings_classes():
        for name in _env_names(cls):
            found.setdefault(name, cls.__name__)
    return found


def _python_reads(*folders: str) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in REPO.joinpath(folder).rglob("*.py"):
            text = path.read_text()
            for pattern in _PY_READS:
                names.update(pattern.findall(text))
    return names


def script_variables() -> set[str]:
    """What the service code, the infra scripts, compose and the Makefile read themselves."""
    names = _python_reads("shared", "services", "infra")
    shell = [*REPO.joinpath("infra").rglob("*.sh"), REPO / ".ci" / "run"]
    for path in shell:
        if path.exists():
            names.update(_SHELL_OVERRIDE.findall(path.read_text()))
    names.update(_COMPOSE_VAR.findall((REPO / "docker-compose.yml").read_text()))
    makefile = (REPO / "Makefile").read_text()
    names.update(set(_MAKE_VAR.findall(makefile)) - set(_MAKE_ASSIGNED.findall(makefile)))
    return names


def support_variables() -> set[str]:
    """What the tests and benchmarks read (documented too, but not required to be)."""
    return _python_reads("tests", "bench")


def documented_variables() -> set[str]:
    """Variables named in the first column of the tables of docs/CONFIGURATION.md."""
    names: set[str] = set()
    for line in DOC.read_text().splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first = line.split("|")[1]
        names.update(n for n in re.findall(r"`([^`]+)`", first) if re.fullmatch(_NAME, n))
    return names


def test_every_settings_class_is_found():
    names = {c.__name__ for c in _settings_classes()}
    assert {
        "BaseServiceSettings",
        "ServedSettings",
        "CancelApiSettings",
        "RelaySettings",
        "WorkerSettings",
        "NotifierSettings",
        "MigrateSettings",
        "TopicSettings",
        "SimulatorSettings",
    } <= names


def test_every_settings_variable_is_documented_in_a_table():
    missing = {n: c for n, c in settings_variables().items() if n not in documented_variables()}
    assert not missing, f"add to docs/CONFIGURATION.md: {missing}"


def test_every_variable_the_scripts_read_is_documented_in_a_table():
    missing = script_variables() - documented_variables()
    assert not missing, f"add to docs/CONFIGURATION.md: {sorted(missing)}"


def test_the_tables_name_only_variables_something_reads():
    known = set(settings_variables()) | script_variables() | support_variables()
    unknown = documented_variables() - known
    assert not unknown, f"nothing reads these, remove them from docs/CONFIGURATION.md: {unknown}"


def test_the_doc_parser_sees_the_tables():
    documented = documented_variables()
    assert {"APP_ENV", "DATABASE_URL", "BPJS_SIM_PORT", "SECRETS_DIR", "PG_PORT"} <= documented
