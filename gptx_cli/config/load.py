"""YAML -> plain Python data, keeping the `line:col` of every node.

PyYAML's safe loader is used for scalars (so values mean exactly what they mean to ModelZoo, which
also reads its configs with PyYAML), with three changes:

- every mapping key and sequence item records where it was written, so that any problem found
  later (by the schema, the semantic rules or the run-spec builder) can be reported as
  `file:line:col: key.path: message`;
- duplicate keys in one mapping are an error (ModelZoo rejects them too) instead of "last one wins";
- `1e-05` (an exponent without a dot) is a float, as in YAML 1.2 and as pydantic coerces it in
  ModelZoo; plain PyYAML would read it as the string "1e-05".

Anchors, aliases and `<<` merge keys work as usual. The result is a `YamlDoc`: the data plus a table
from key paths (tuples of str keys / int indices) to positions. A node reached through an alias is
reported at the place where it is used (the alias), so a problem inside a shared anchor names the
path the reader is looking at.

Torch-free (validate-config must not import torch).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gptx_cli.config.legacy import convert_legacy, is_legacy
from gptx_cli.config.schemas import KeyPath
from gptx_cli.errors import ConfigError, UsageError

try:  # libyaml's parser is several times faster; the constructor stays PyYAML's.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _BaseLoader = yaml.SafeLoader

Position = tuple  # (line, col), both 1-based

# YAML 1.2 floats that YAML 1.1 (PyYAML) misses: an exponent without a decimal point (1e-05, 2E+3).
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    pass


# Copy the resolver table before adding to it: never change PyYAML's global SafeLoader behaviour.
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in _BaseLoader.yaml_implicit_resolvers.items()}  # type: ignore[attr-defined]
for _first in "-+0123456789":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, ("tag:yaml.org,2002:float", _EXP_FLOAT))


class LocatedConfigError(ConfigError):
    """A ConfigError that also carries its parts, so validate-config can report it as a problem."""

    def __init__(
        self,
        file: str,
        line: int | None,
        col: int | None,
        path: str | None,
        message: str,
        override: str | None = None,
    ) -> None:
        if line is None:
            where = f"{file}: override '{override}'" if override else file
        else:
            where = f"{file}:{line}:{col}"
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")
        self.file, self.line, self.col, self.path, self.detail, self.override = (
            file,
            line,
            col,
            path,
            message,
            override,
        )


def format_path(path: Iterable[Any]) -> str:
    """`("trainer", "init", "schedulers", 0, "LinearLR")` -> `trainer.init.schedulers[0].LinearLR`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


@dataclass
class YamlDoc:
    """A loaded YAML document: plain data and the position of every key / item."""

    file: str
    data: Any
    positions: dict[KeyPath, Position] = field(default_factory=dict)

    def where(self, path: Iterable[Any]) -> Position:
        """The position of `path`, or of its nearest written ancestor (a default that was never written)."""
        p = tuple(path)
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (1, 1))

    def error(self, path: Iterable[Any], message: str) -> ConfigError:
        """A one-line ConfigError `file:line:col: key.path: message`."""
        path = tuple(path)
        line, col = self.where(path)
        return LocatedConfigError(self.file, line, col, format_path(path), message)


def _mark(node: yaml.Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


MAX_NODES = 100_000  # published configs have a few hundred values


class _Builder:
    """Turns a composed node graph into plain data and the position table."""

    def __init__(self, loader: _Loader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.positions: dict[KeyPath, Position] = {}
        self._active: set[int] = set()  # node ids on the current path (recursive aliases)
        self._built = 0  # nodes built, aliases expanded: bounded (a 300-byte alias bomb is billions)

    def fail(self, node: yaml.Node, message: str, path: str | None = None) -> ConfigError:
        line, col = _mark(node)
        return LocatedConfigError(self.file, line, col, path, message)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self._built += 1
        if self._built > MAX_NODES:
            raise self.fail(
                node,
                f"the YAML expands to more than {MAX_NODES:,} values through its aliases (an alias bomb?)",
            )
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as err:
                raise self.fail(node, f"bad value: {getattr(err, 'problem', err)}") from None
        if id(node) in self._active:
            raise self.fail(node, "recursive alias")
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self.positions[path + (i,)] = _mark(child)
                    items.append(self.build(child, path + (i,)))
                return items
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            raise self.fail(node, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        # Duplicates among the keys written here are errors; keys that come in through `<<` merges
        # are overridden by explicit ones (YAML merge semantics).
        seen: dict[Any, yaml.Node] = {}
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        raise self.fail(src, "a '<<' merge needs a mapping (or a list of mappings)")
                    self._flatten(src, merged)
                continue
            key = self.build(key_node, path)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise self.fail(key_node, "mapping keys must be plain scalars")
            if key in seen:
                first = _mark(seen[key])
                raise self.fail(
                    key_node,
                    f"duplicate key '{key}' (first defined at line {first[0]})",
                    format_path(path + (key,)),
                )
            seen[key] = key_node
            explicit.append((key_node, value_node))
        out: dict[Any, Any] = {}
        for key_node, value_node in merged + explicit:
            key = self.build(key_node, path)
            self.positions[path + (key,)] = _mark(key_node)
            out[key] = self.build(value_node, path + (key,))
        return out

    def _flatten(self, node: yaml.MappingNode, out: list[tuple[yaml.Node, yaml.Node]]) -> None:
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if isinstance(src, yaml.MappingNode):
                        self._flatten(src, out)
            else:
                out.append((key_node, value_node))


def load_yaml_text(text: str, file: str = "<string>") -> YamlDoc:
    """Parse one YAML document from `text`; raises ConfigError `file:line:col: ...` on bad YAML."""
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = err.problem or "invalid YAML"
            if (
                err.context
            ):  # e.g. "while parsing a flow sequence" / "found duplicate anchor ...; first occurrence"
                cm = err.context_mark
                at = (
                    f" at line {cm.line + 1}"
                    if cm is not None and mark is not None and cm.line != mark.line
                    else ""
                )
                problem = f"{err.context}{at}: {problem}"
            raise LocatedConfigError(file, line, col, None, f"invalid YAML: {problem}") from None
        except yaml.YAMLError as err:
            raise LocatedConfigError(file, 1, 1, None, f"invalid YAML: {err}") from None
        if root is None:
            return YamlDoc(file, None, {(): (1, 1)})
        builder = _Builder(loader, file)
        data = builder.build(root, ())
        builder.positions[()] = _mark(root)
        return YamlDoc(file, data, builder.positions)
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> YamlDoc:
    """Read and parse a YAML file. An unreadable file is a UsageError (exit 2)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{p}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{p}: cannot read: {err}") from None
    return load_yaml_text(text, str(p))


@dataclass
class ConfigSource:
    """One trainer's config in the trainer layout, with a way back to where each key was written.

    `data` is `{"trainer": {"init": ..., "fit": ..., ...}}`. For a legacy config (converted in memory)
    or the i-th trainer of a list, `path_map` translates trainer-layout paths back to the paths
    the user wrote, so messages name their keys and lines. `overrides` records paths set from the
    command line (they have no line).
    """

    file: str
    data: dict[str, Any]
    doc: YamlDoc
    path_map: list[tuple[KeyPath, KeyPath]] = field(default_factory=list)
    overrides: dict[KeyPath, str] = field(default_factory=dict)
    legacy: bool = False
    trainer_index: int | None = None  # set when the file holds a list of trainers
    conversion_problems: list[tuple[KeyPath, str]] = field(default_factory=list)  # legacy paths

    def original_path(self, path: Iterable[Any]) -> KeyPath:
        """The path as written in the file (the longest mapped prefix is translated)."""
        p = tuple(path)
        best: tuple[KeyPath, KeyPath] | None = None
        for new, old in self.path_map:
            if p[: len(new)] == new and (best is None or len(new) > len(best[0])):
                best = (new, old)
        if best is None:
            return p
        return best[1] + p[len(best[0]) :]

    def locate(self, path: Iterable[Any]) -> tuple[str, Position | None, str | None]:
        """(display path, (line, col) or None, override text or None) for a trainer-layout path."""
        p = tuple(path)
        for q in (p[:i] for i in range(len(p), 0, -1)):
            if q in self.overrides:
                return format_path(p), None, self.overrides[q]
        orig = self.original_path(p)
        return format_path(orig), self.doc.where(orig), None

    def error(self, path: Iterable[Any], message: str) -> ConfigError:
        shown, pos, override = self.locate(path)
        if pos is None:
            return LocatedConfigError(self.file, None, None, shown, message, override)
        return LocatedConfigError(self.file, pos[0], pos[1], shown, message)


TRAINER_METHODS = ("init", "fit", "validate", "validate_all")
INIT_SECTIONS = (
    "model",
    "optimizer",
    "schedulers",
    "precision",
    "loop",
    "checkpoint",
    "logging",
    "backend",
    "seed",
    "model_dir",
    "callbacks",
    "loggers",
    "sparsity",
    "device",
    "autorestart",
)


def dataloader_sections(trainer: dict[str, Any]) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """(path, section) of every dataloader a trainer-layout dict holds (train, val, validate_all's)."""
    T: KeyPath = ("trainer",)
    for section, key in (
        ("fit", "train_dataloader"),
        ("fit", "val_dataloader"),
        ("validate", "val_dataloader"),
        ("validate_all", "val_dataloaders"),
    ):
        part = (
            (trainer.get("trainer") or {}).get(section) if isinstance(trainer.get("trainer"), dict) else None
        )
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, dict):
            yield T + (section, key), value
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, dict):
                    yield T + (section, key, i), v


def trainer_sources(doc: YamlDoc, strict: bool = True) -> list[ConfigSource]:
    """The trainers a config file describes, each in the trainer layout (legacy files are converted).

    Raises ConfigError when the top level is not a mapping or a trainer list item is malformed, and
    (with `strict`) when the legacy conversion finds a problem; otherwise those problems are kept in
    `source.conversion_problems` for validate-config to report together with the others.
    """
    data = doc.data
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else f"a {type(data).__name__}"
        raise doc.error((), f"expected a mapping with a 'trainer' section (or a legacy config), got {kind}")
    if is_legacy(data):
        conv = convert_legacy(data)
        if conv.problems and strict:
            path, message = conv.problems[0]
            raise doc.error(path, message)
        source = ConfigSource(doc.file, conv.data, doc, conv.path_map, legacy=True)
        source.conversion_problems = conv.problems
        return [source]
    trainer = data["trainer"]
    extra = [k for k in data if k != "trainer"]
    if extra:
        raise doc.error((extra[0],), f"unknown top-level key '{extra[0]}' next to 'trainer'")
    if isinstance(trainer, list):
        # ModelZoo: `trainer: [{trainer: {...}}, {trainer: {...}}]` runs the trainers one after another.
        out = []
        for i, item in enumerate(trainer):
            body = item.get("trainer") if isinstance(item, dict) and set(item) == {"trainer"} else None
            if not isinstance(body, dict):
                raise doc.error(("trainer", i), "each item of a trainer list must be {trainer: {...}}")
            out.append(
                ConfigSource(
                    doc.file,
                    {"trainer": body},
                    doc,
                    [(("trainer",), ("trainer", i, "trainer"))],
                    trainer_index=i,
                )
            )
        if not out:
            raise doc.error(("trainer",), "the trainer list is empty")
        return out
    if not isinstance(trainer, dict):
        raise doc.error(("trainer",), f"expected a mapping (init/fit/validate), got {_kind(trainer)}")
    return [ConfigSource(doc.file, data, doc)]


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """`"trainer.init.loop.max_steps=5"` -> (("trainer", "init", "loop", "max_steps"), 5).

    The key is a dotted path in the trainer layout. Shorthands: a leading `trainer.` may be left
    out (`init.loop.max_steps=5`), and so may `trainer.init.` before an init section
    (`loop.max_steps=5`, `model.hidden_size=64`) and `trainer.fit.` before `train_dataloader` /
    `val_dataloader` / `ckpt_path` (`val_dataloader.x` goes to `trainer.validate.val_dataloader` when
    the config has that one and no `fit.val_dataloader`; see `apply_overrides`). Integer parts index lists (`init.schedulers.0.LinearLR.total_iters=9`).
    The value is parsed as YAML (`5` is an int, `[1, 2]` a list, `null` None, `1e-4` a float).
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"bad override '{text}': expected dotted.key=value, e.g. init.loop.max_steps=5")
    parts: list[Any] = [int(p) if p.isdigit() else p for p in key.split(".")]
    if parts[0] != "trainer":
        if parts[0] in INIT_SECTIONS:
            parts = ["init", *parts]
        elif parts[0] in ("train_dataloader", "val_dataloader", "ckpt_path"):
            parts = ["fit", *parts]
        if parts[0] not in TRAINER_METHODS:
            raise UsageError(
                f"bad override '{text}': the key must start with trainer, init, fit, validate, "
                f"validate_all or an init section ({', '.join(INIT_SECTIONS[:8])}, ...)"
            )
        parts = ["trainer", *parts]
    try:
        parsed = load_yaml_text(value, "<override>").data
    except ConfigError as err:
        raise UsageError(f"bad override '{text}': value is not valid YAML ({err})") from None
    return tuple(parts), parsed


def apply_overrides(source: ConfigSource, overrides: Iterable[str]) -> None:
    """Set each `key=value` in `source.data` (creating missing mappings) and remember where it came from."""
    for text in overrides:
        path, value = parse_override(text)
        if text.lstrip().startswith("val_dataloader") and isinstance(source.data.get("trainer"), dict):
            # The shorthand means the config's own validation loader: fit's, else validate's.
            trainer = source.data["trainer"]
            fit, validate = trainer.get("fit"), trainer.get("validate")
            has_fit = isinstance(fit, dict) and "val_dataloader" in fit
            if not has_fit and isinstance(validate, dict) and "val_dataloader" in validate:
                path = ("trainer", "validate") + path[2:]
        node: Any = source.data
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if isinstance(node, dict):
                if part not in node or node[part] is None:
                    node[part] = [] if isinstance(nxt, int) else {}
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                raise UsageError(f"bad override '{text}': {format_path(path[: i + 1])} cannot be set here")
        last = path[-1]
        if isinstance(node, dict):
            node[last] = value
        elif isinstance(node, list) and isinstance(last, int) and last <= len(node):
            if last == len(node):
                node.append(value)
            else:
                node[last] = value
        else:
            raise UsageError(f"bad override '{text}': {format_path(path)} cannot be set here")
        source.overrides[path] = text
