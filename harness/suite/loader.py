"""A suite file: the ``Suite`` model (the base point, its sweep and per-device profiles) and the
strict loader that reads one.

    load_suite(path) -> Suite                 YAML validated at every level
    parse_suite(data, source, folder) -> Suite  the same for data already read
    read_yaml(text) -> data                   the one YAML reader (suite files and ``--set`` values)

Every user error is a :class:`SuiteError` whose lines read
``suites/x.yaml: workload.seq_len: got 0, allowed: integer >= 1``.

The YAML reader is ``yaml.SafeLoader`` (libyaml's when installed) made strict and bounded: a key
twice in one mapping is refused with both lines; a file over ``MAX_YAML_BYTES`` is refused before
it is parsed; a document that would expand to more than ``MAX_YAML_VALUES`` values once anchors
and aliases are followed (a "billion laughs"), that nests deeper than ``MAX_YAML_DEPTH`` or whose
alias refers to itself is refused before any Python object is built; tags other than YAML's
standard ones are refused, so no Python object is ever created from a file.

Files a suite names (``workload.lengths.path``) are resolved against the suite file's folder
(the current folder for a suite that is not read from a file; ``Suite.context()`` passes it on),
for the suite body, its profiles and ``--set`` values alike, and must exist when the suite is
loaded and its points are built; the points carry the absolute path, as the worker runs in
another folder (so the ids of such points depend on where the file is).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr, StringConstraints, ValidationError, ValidationInfo, model_validator

from harness.suite.errors import FieldError, SuiteError, format_validation_error, shown
from harness.suite.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES, size_error
from harness.suite.paths import check_override, check_path
from harness.suite.tune_spec import TuneSpec
from harness.suite.schema import (
    CompareSpec,
    FOLDER_CONTEXT,
    LauncherSpec,
    MeasureSpec,
    ModelSpec,
    StrategiesSpec,
    SweepSpec,
    WorkloadSpec,
    _Strict,
)



class Suite(_Strict):
    """A suite file: the base point, the sweep over it, and per-device profiles."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelSpec = Field(default_factory=ModelSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    strategies: StrategiesSpec = Field(default_factory=StrategiesSpec)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    launcher: LauncherSpec = Field(default_factory=LauncherSpec)  # where points run (local, slurm)
    compare: CompareSpec = Field(default_factory=CompareSpec)  # which comparisons, how measured
    tune: TuneSpec = Field(default_factory=TuneSpec)  # tbench tune: objective, constraints, budget
    # device -> {dotted.path: value}; a list value makes or replaces a sweep axis (harness.suite.sweep)
    profiles: dict[Literal["cpu", "cuda"], dict[str, Any]] = Field(default_factory=dict)
    # name -> device -> {dotted.path: value}: applied on request (--variant quick) after the
    # device profile; a variant is sized per device, like the profiles
    variants: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$")],
                   dict[Literal["cpu", "cuda"], dict[str, Any]]] = Field(default_factory=dict)
    # the suite file's folder (None: the current folder), from the validation context; not a key
    _folder: Path | None = PrivateAttr(None)

    def context(self) -> dict:
        """Validation context for models built from this suite: the folder relative paths are
        read from (see the module docstring)."""
        return {FOLDER_CONTEXT: self._folder}

    @model_validator(mode="after")
    def _remember_folder(self, info: ValidationInfo):
        self._folder = (info.context or {}).get(FOLDER_CONTEXT)
        return self

    @model_validator(mode="after")
    def _paths_exist(self):
        for key in self.compare.baseline:
            check_path(key, prefix=("compare", "baseline"))
        for key, values in self.sweep.grid.items():
            check_path(key, prefix=("sweep", "grid"))
            if not values:
                raise FieldError("got [], allowed: a non-empty list", subpath=("sweep", "grid", key))
        for i, group in enumerate(self.sweep.zip):
            sizes = {len(v) for v in group.values()}
            for key in group:
                check_path(key, prefix=("sweep", "zip", i))
            if not group or 0 in sizes:
                raise FieldError("got an empty group or list, allowed: non-empty lists",
                                 subpath=("sweep", "zip", i))
            if len(sizes) > 1:
                raise FieldError(f"lists of different lengths {sorted(sizes)}; allowed: equal lengths",
                                 subpath=("sweep", "zip", i))
        for i, rule in enumerate(self.sweep.exclude):
            for key in rule:
                check_path(key, prefix=("sweep", "exclude", i))
        layers = [(("profiles", d), e) for d, e in self.profiles.items()]
        layers += [(("variants", n, d), e) for n, v in self.variants.items() for d, e in v.items()]
        for prefix, entries in layers:
            for key, value in entries.items():
                check_override(key, value, prefix=prefix)
        return self


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise SuiteError with every problem found."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError([f"{path}: file not found" + ("" if not path.exists() else " (a folder)")])
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # never more than the limit, whatever stat says
        data = read_yaml(raw, size=max(len(raw), path.stat().st_size))
    except yaml.YAMLError as exc:
        raise SuiteError([f"{path}: {yaml_problem(exc)}"]) from None
    except UnicodeDecodeError:
        raise SuiteError([f"{path}: not a text file (allowed: UTF-8 YAML)"]) from None
    except OSError as exc:
        raise SuiteError([f"{path}: cannot be read ({exc.strerror or exc})"]) from None
    return parse_suite(data, str(path), folder=path.resolve().parent)


def parse_suite(data: Any, source: str, folder: Path | None = None) -> Suite:
    """Validate suite data read from ``source``; relative paths in it are read from ``folder``
    (None: the current folder)."""
    if not isinstance(data, dict):
        raise SuiteError([f"{source}: got {type(data).__name__}, allowed: a mapping with 'name', "
                          "'model', 'workload', 'strategies', 'measure', 'sweep', 'profiles'"])
    try:
        return Suite.model_validate(data, context={FOLDER_CONTEXT: folder})
    except ValidationError as exc:
        raise SuiteError(format_validation_error(exc, source, Suite)) from None


class YAMLRefused(yaml.MarkedYAMLError):
    """Valid YAML this loader refuses (a repeated key, too large); ``problem`` is the whole story."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.SafeLoader`` that refuses repeated keys and documents too large once expanded."""

    def __init__(self, stream):
        super().__init__(stream)
        self.checked_mappings: set[int] = set()

    def construct_document(self, node):
        check_expansion(node)  # before any object exists: a bomb is never built
        return super().construct_document(node)

    def flatten_mapping(self, node):
        # Called on every mapping before its merge keys (``<<``) are resolved, and first on the
        # mapping as written: only then are repeated keys the user's own.
        if id(node) not in self.checked_mappings:
            self.checked_mappings.add(id(node))
            refuse_repeated_keys(self, node)
        super().flatten_mapping(node)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise YAMLRefused(f"integer of {len(node.value)} characters; allowed: at most 4300 "
                              "digits", node.start_mark) from None


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def refuse_repeated_keys(loader, node) -> None:
    seen: dict = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # a mapping or list as a key: the constructor refuses it (unhashable)
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault((type(key), key), key_node)
        except TypeError:
            continue
        if first is not key_node:
            raise YAMLRefused(f"duplicate key {shown(key)} (first at line {first.start_mark.line + 1}"
                              f", again at line {key_node.start_mark.line + 1}); allowed: each key "
                              "once in a mapping", key_node.start_mark)


def check_expansion(root) -> None:
    """Refuse a node graph that expands to more than MAX_YAML_VALUES values, nests deeper than
    MAX_YAML_DEPTH or holds an alias inside its own anchor. One pass over the distinct nodes
    (an alias is the same node object reached again), memoised, no recursion."""
    size: dict[int, int] = {}  # id(node) -> values in its expansion, capped at the limit + 1
    open_: set[int] = set()  # nodes on the current path: reaching one again is a cycle
    stack = [(root, 1, False)]
    while stack:
        node, depth, closing = stack.pop()
        children = _children(node)
        if closing:
            open_.discard(id(node))
            size[id(node)] = min(1 + sum(size[id(c)] for c in children), MAX_YAML_VALUES + 1)
            if size[id(node)] > MAX_YAML_VALUES:
                raise YAMLRefused(f"more than {MAX_YAML_VALUES:,} values once anchors and aliases "
                                  f"are expanded; allowed: at most {MAX_YAML_VALUES:,}",
                                  node.start_mark)
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            raise YAMLRefused("an alias inside its own anchor (a recursive value); allowed: "
                              "aliases to complete values", node.start_mark)
        if depth > MAX_YAML_DEPTH:
            raise YAMLRefused(f"nested more than {MAX_YAML_DEPTH} levels deep; allowed: at most "
                              f"{MAX_YAML_DEPTH}", node.start_mark)
        open_.add(id(node))
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def read_yaml(text: str | bytes, size: int | None = None) -> Any:
    """The data of one YAML document (bytes: UTF-8) read by :class:`StrictLoader`; raises
    ``yaml.YAMLError`` (format it with :func:`yaml_problem`) or ``UnicodeDecodeError``.
    ``size``: the size in bytes of the whole source, when more than ``text`` is known."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    size = len(raw) if size is None else size
    if size > MAX_YAML_BYTES:  # before decoding or parsing anything
        raise YAMLRefused(size_error(size))
    loader = StrictLoader(raw.decode("utf-8"))
    try:
        return loader.get_single_data()
    except RecursionError:  # the pure-Python parser, before check_expansion sees the nodes
        raise YAMLRefused(f"nested too deeply; allowed: at most {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error, saying where; a python tag says it is refused."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, YAMLRefused):
        return f"{where}{problem}"
    if "constructor for the tag" in problem:
        return (f"{where}YAML tag refused ({problem.split('tag', 1)[1].strip()}); allowed: plain "
                "mappings, lists, strings, numbers, booleans, null")
    return f"{where}invalid YAML: {problem}"
