"""Reading docker-compose.yml and the Dockerfile without a Docker engine (CI has none).

A small, explicit subset of what Docker Compose and BuildKit do, enough for the files in this repository:

* :func:`load_compose`: YAML with Compose's ``!reset`` / ``!override`` tags, then variable interpolation
  (``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``, ``$$``);
* :func:`merge`: several compose files as ``docker compose -f a.yml -f b.yml`` merges them (mappings merged,
  sequences appended, ``command``/``entrypoint``/``healthcheck.test`` replaced, ``!reset`` removes);
* :func:`parse_dockerfile`: stages with their resolved base image, ENV, USER, ENTRYPOINT, CMD, COPY and RUN.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
CPU_OVERRIDE = REPO / "docker-compose.cpu.yml"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"


# ------------------------------------------------------------------------------------------------------------
# Compose files


class Reset:
    """``!reset``: remove the attribute set by the files before this one."""

    def __repr__(self) -> str:
        return "!reset"


@dataclass
class Override:
    """``!override VALUE``: replace the attribute instead of merging into it."""

    value: Any


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus Compose's two merge tags."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)

_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class InterpolationError(ValueError):
    pass


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            return env.get(m.group("named"), "")
        spec = _BRACED.match(m.group("braced"))
        if spec is None:
            raise InterpolationError(f"invalid interpolation ${{{m.group('braced')}}}")
        name, op, arg = spec.group("name"), spec.group("op"), spec.group("arg") or ""
        value = env.get(name)
        if op is None:
            return value or ""
        arg = interpolate_string(arg, env)
        unset_or_empty = not value
        if op == ":-":
            return arg if unset_or_empty else value  # type: ignore[return-value]
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                raise InterpolationError(f"{name}: {arg or 'required variable is missing'}")
            return value  # type: ignore[return-value]
        if op == ":+":
            return "" if unset_or_empty else arg
        return "" if value is None else arg  # "+"

    return _VAR.sub(one, text)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys), as Compose does before validating the model."""
    if isinstance(value, str):
        return interpolate_string(value, env)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, Override):
        return Override(interpolate(value.value, env))
    return value


def read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=ComposeLoader)  # noqa: S506 (a SafeLoader subclass)


_REPLACED = {("services", "*", "command"), ("services", "*", "entrypoint"), ("services", "*", "healthcheck", "test")}


def _replaced(path: tuple[str, ...]) -> bool:
    return any(len(path) == len(p) and all(a == "*" or a == b for a, b in zip(p, path, strict=True)) for p in _REPLACED)


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Merge ``override`` onto ``base`` by Compose's rules (see the module doc)."""
    if isinstance(override, Override):
        return strip_tags(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            elif key in out and not _replaced((*path, str(key))):
                out[key] = merge(out[key], value, (*path, str(key)))
            else:
                out[key] = strip_tags(value)
        return out
    if isinstance(base, list) and isinstance(override, list):
        return base + [v for v in strip_tags(override) if v not in base]
    return strip_tags(override)


def strip_tags(value: Any) -> Any:
    """The model without merge tags: ``!reset`` entries dropped, ``!override`` unwrapped."""
    if isinstance(value, Override):
        return strip_tags(value.value)
    if isinstance(value, dict):
        return {k: strip_tags(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [strip_tags(v) for v in value if not isinstance(v, Reset)]
    return value


def load_compose(*paths: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The application model of ``docker compose -f p1 -f p2 ...`` with ``env`` as the environment (and .env)."""
    env = dict(env or {})
    model: Any = {}
    for path in paths or (COMPOSE_FILE,):
        model = merge(model, interpolate(read_yaml(path), env))
    return strip_tags(model)


def compose_schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def validate_compose(model: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``model`` conforms to the Compose Specification schema."""
    import jsonschema

    jsonschema.Draft201909Validator(compose_schema()).validate(model)


def compose_variables(path: Path) -> dict[str, str | None]:
    """Variables a compose file interpolates, each with its ``:-`` default (None when it has none)."""
    found: dict[str, str | None] = {}
    for m in _VAR.finditer(path.read_text(encoding="utf-8")):
        if m.group("escaped"):
            continue
        if m.group("named"):
            found.setdefault(m.group("named"), None)
            continue
        spec = _BRACED.match(m.group("braced"))
        assert spec is not None, m.group(0)
        found[spec.group("name")] = spec.group("arg") if spec.group("op") == ":-" else None
    return found


def volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume of a service, short or long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target, read_only = v.get("source", ""), v["target"], bool(v.get("read_only", False))
        out.append((source, target, read_only))
    return out


def service_order(model: Mapping[str, Any]) -> list[str]:
    """Services in start order: each after everything in its ``depends_on`` (ties by name)."""
    services = model["services"]
    deps = {name: set(_depends_on(svc)) for name, svc in services.items()}
    order: list[str] = []
    while len(order) < len(services):
        ready = sorted(n for n in services if n not in order and deps[n] <= set(order))
        assert ready, f"dependency cycle among {sorted(set(services) - set(order))}"
        order.append(ready[0])
    return order


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    dep = service.get("depends_on", {})
    if isinstance(dep, list):
        return {name: "service_started" for name in dep}
    return {name: spec.get("condition", "service_started") for name, spec in dep.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """``{dependency: condition}`` of a service, for either syntax."""
    return _depends_on(service)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# ------------------------------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Stage:
    name: str
    base: str  # resolved FROM image (ARG defaults substituted)
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments), in order

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out

    def exec_form(self, instruction: str) -> list[str] | None:
        args = self.last(instruction)
        if args is None:
            return None
        value = json.loads(args)
        assert isinstance(value, list), f"{instruction} {args} is not in exec form"
        return value

    def healthcheck(self) -> list[str] | None:
        """The HEALTHCHECK's command (exec form), options dropped."""
        args = self.last("HEALTHCHECK")
        if args is None:
            return None
        _, found, command = args.partition("CMD ")
        assert found, f"HEALTHCHECK {args} has no CMD"
        value = json.loads(command)
        assert isinstance(value, list), f"HEALTHCHECK {args} is not in exec form"
        return value

    def copies(self) -> list[tuple[list[str], str, dict[str, str]]]:
        """(sources, destination, flags) of each COPY."""
        out = []
        for args in self.all("COPY"):
            tokens = shlex.split(args)
            flags = dict(t[2:].split("=", 1) for t in tokens if t.startswith("--"))
            paths = [t for t in tokens if not t.startswith("--")]
            out.append((paths[:-1], paths[-1], flags))
        return out


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name, with global ARG defaults substituted into FROM."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "ARG" and current is None:
            key, _, value = rest.partition("=")
            args[key] = value
        elif instruction == "FROM":
            m = re.match(r"^(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?$", rest, re.I)
            assert m is not None, line
            image = re.sub(r"\$\{?(\w+)\}?", lambda v: args.get(v.group(1), v.group(0)), m.group("image"))
            name = m.group("name") or str(len(stages))
            current = stages[name] = Stage(name, image)
        else:
            assert current is not None, f"{instruction} before FROM"
            current.instructions.append((instruction, rest))
    return stages


def target_chain(stages: Mapping[str, Stage], target: str) -> list[Stage]:
    """The stages a target builds from: itself, its FROM ancestors and the stages it copies --from."""
    seen: list[Stage] = []

    def visit(name: str) -> None:
        if name not in stages or stages[name] in seen:
            return
        stage = stages[name]
        seen.append(stage)
        visit(stage.base)
        for _, _, flags in stage.copies():
            if "from" in flags:
                visit(flags["from"])

    visit(target)
    return seen
