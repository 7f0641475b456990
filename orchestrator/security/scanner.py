"""Static analysis of a plugin's Python source before it is built (installation step 3).

Two sets of checks run over every ``*.py`` file the image would contain:

- bandit's, run as a library with ``# nosec`` ignored: the plugin author is the party being
  checked, so an annotation in their code must not silence the check;
- Summit's own (``summit:*``), for what a sandboxed plugin has no business doing at all and
  bandit rates low or misses: starting processes, loading native code, importing modules by
  a computed name, and opening raw sockets without ``network:access``.

Name resolution follows ``import x as y``, ``from x import y as z``, plain assignments
(``run = subprocess.run``), ``getattr(m, "literal")`` and ``__import__("literal")``. It is
deliberately flow-insensitive: every name a binding ever takes is considered, so rebinding a
name later in the file cannot hide an earlier use. A file that cannot be parsed, or that is
too deeply nested to analyse, is a HIGH finding: what cannot be checked is not let through.
"""

from __future__ import annotations

import ast
import builtins
import logging
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from summit_sdk.imagebuild import source_files

__all__ = ["SEVERITIES", "Finding", "ScanError", "Severity", "blocking", "scan_source", "summarize"]

Severity = Literal["LOW", "MEDIUM", "HIGH"]
SEVERITIES: tuple[Severity, ...] = ("LOW", "MEDIUM", "HIGH")

PROCESS_EXEC = "summit:process-exec"
NATIVE_CODE = "summit:native-code"
DYNAMIC_IMPORT = "summit:dynamic-import"
RAW_SOCKET = "summit:raw-socket"
SYNTAX_ERROR = "summit:syntax-error"
SCAN_ERROR = "summit:scan-error"

# Importable as extension modules on the platforms plugin images run on.
_NATIVE_SUFFIXES = (".so", ".pyd")
_OS_MODULES = frozenset({"os", "posix", "nt"})
_OS_EXEC_NAMES = frozenset({"system", "popen", "fork", "forkpty"})
_OS_EXEC_PREFIXES = ("exec", "spawn", "posix_spawn")
_PROCESS_MODULES = frozenset({"subprocess", "_posixsubprocess", "asyncio.subprocess"})
_PROCESS_CALLS = frozenset(
    {"pty.spawn", "pty.fork", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell"}
)
# Event loop methods, reached through objects this resolver cannot follow.
_PROCESS_METHODS = frozenset({"subprocess_exec", "subprocess_shell"})
_NATIVE_MODULES = frozenset({"ctypes", "_ctypes", "cffi"})
_SOCKET_CALLS = frozenset(
    {
        "socket.socket",
        "socket.create_connection",
        "socket.create_server",
        "socket.fromfd",
        "socket.socketpair",
    }
)
# Callables that load code by name or path: (qualified name, argument position, keyword).
_LOADERS: dict[str, tuple[int, str]] = {
    "builtins.__import__": (0, "name"),
    "importlib.__import__": (0, "name"),
    "importlib.import_module": (0, "name"),
    "importlib.util.spec_from_file_location": (1, "location"),
    "runpy.run_module": (0, "mod_name"),
    "runpy.run_path": (0, "path_name"),
}
# A computed attribute of these reaches exec-like functions without naming them.
_LOOKUP_GUARDED = frozenset({"builtins", "importlib", *_OS_MODULES})
_BUILTIN_NAMES = frozenset(dir(builtins))
# Long chains add nothing a rule can match, and would let a crafted file grow without bound.
_MAX_QUALNAME = 200


class ScanError(RuntimeError):
    """The scanner itself is unusable (for instance bandit loaded no checks)."""


@dataclass(frozen=True)
class Finding:
    """One problem in one file. ``line`` is 1-based; 0 means the file as a whole."""

    file: str
    line: int
    rule: str
    severity: Severity
    confidence: Severity | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scan_source(root: Path, *, network_access: bool) -> list[Finding]:
    """Every finding in the plugin source under ``root``, ordered by (file, line, rule).

    The files are those the image build copies (``summit_sdk.imagebuild.source_files``: no
    symlinks, no ``.git``, ``.venv`` or caches), so what is scanned is what would run.
    ``network_access`` is whether the manifest asks for ``network:access``; with it, raw
    sockets are allowed.
    """
    if not root.is_dir():
        # An empty scan of a missing folder would read as a clean plugin.
        raise NotADirectoryError(f"plugin source {root} is not a directory")
    findings: list[Finding] = []
    parsed: dict[Path, str] = {}
    for path in source_files(root):
        rel = path.relative_to(root).as_posix()
        if path.name.endswith(_NATIVE_SUFFIXES):
            message = "compiled extension module: native code cannot be checked"
            findings.append(Finding(rel, 0, NATIVE_CODE, "HIGH", None, message))
            continue
        if path.suffix != ".py":
            continue
        tree = _parse(path, rel)
        if isinstance(tree, Finding):
            findings.append(tree)
            continue
        try:
            findings.extend(_SummitRules.run(tree, rel, network_access=network_access))
        except RecursionError:
            message = "too deeply nested to analyse"
            findings.append(Finding(rel, 0, SCAN_ERROR, "HIGH", None, message))
            continue
        parsed[path] = rel
    findings.extend(_bandit_findings(parsed))
    return _ordered(findings)


def summarize(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings there are of each severity (every severity present, maybe 0)."""
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts


def blocking(findings: Iterable[Finding], *, fail_on: Severity = "HIGH") -> list[Finding]:
    """The findings at or above ``fail_on``: those that stop an installation."""
    if fail_on not in SEVERITIES:
        raise ValueError(f"fail_on must be one of {', '.join(SEVERITIES)}, not {fail_on!r}")
    floor = SEVERITIES.index(fail_on)
    return [f for f in findings if SEVERITIES.index(f.severity) >= floor]


def _parse(path: Path, rel: str) -> ast.Module | Finding:
    """The module's syntax tree, or the finding that says why there is none."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        return Finding(rel, 0, SCAN_ERROR, "HIGH", None, f"unreadable: {exc.strerror}")
    try:
        # Invalid escape sequences warn at parse time; the plugin's style is not our output.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source, filename=rel)
    except SyntaxError as exc:
        message = f"cannot be parsed: {exc.msg}"
        return Finding(rel, exc.lineno or 0, SYNTAX_ERROR, "HIGH", None, message)
    except (ValueError, RecursionError) as exc:
        # ValueError: null bytes (Python 3.11); RecursionError: pathological nesting.
        message = f"cannot be parsed: {type(exc).__name__}"
        return Finding(rel, 0, SYNTAX_ERROR, "HIGH", None, message)


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    # Two checks can report the same rule on one line (two calls on it): keep the worst.
    best: dict[tuple[str, int, str], Finding] = {}
    for finding in findings:
        key = (finding.file, finding.line, finding.rule)
        kept = best.get(key)
        if kept is None or SEVERITIES.index(finding.severity) > SEVERITIES.index(kept.severity):
            best[key] = finding
    return [best[key] for key in sorted(best)]


# bandit keeps module-level state (its blacklist plugin's config is set per test set) and is
# not documented as thread-safe; one scan at a time also makes the logger switch below safe.
_BANDIT_LOCK = threading.Lock()


# bandit's own loggers, and stevedore's, which loads bandit's plugins and logs an ERROR with a
# traceback for each optional one whose extra is not installed (the sarif formatter).
_BANDIT_LOGGERS = ("bandit", "stevedore")


@contextmanager
def _quiet_bandit() -> Iterator[None]:
    """Silence bandit's loggers, restore their levels after, and leave every other logger be.

    Its internal errors are not lost: a file it gives up on is in ``get_skipped()`` and
    becomes a finding. No handler is added and the root logger is never touched.
    """
    loggers = [logging.getLogger(name) for name in _BANDIT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _bandit_findings(files: dict[Path, str]) -> list[Finding]:
    if not files:
        return []
    by_name = {str(path): rel for path, rel in files.items()}
    with _BANDIT_LOCK, _quiet_bandit():
        # Imported here: loading bandit's plugins takes ~0.3 s and logs, so it waits for the
        # first scan and happens inside the quiet block.
        from bandit.core import config as b_config
        from bandit.core import manager as b_manager

        manager = b_manager.BanditManager(
            b_config.BanditConfig(), "file", quiet=True, ignore_nosec=True
        )
        if not any(manager.b_ts.tests.values()):
            raise ScanError("bandit loaded no checks; is its installation complete?")
        for name in by_name:
            # One file per run: bandit shows a progress bar on stderr for long file lists.
            manager.files_list = [name]
            manager.run_tests()
        issues = list(manager.results)
        skipped = manager.get_skipped()

    findings = []
    for issue in issues:
        findings.append(
            Finding(
                file=by_name[issue.fname],
                line=int(issue.lineno),
                rule=f"bandit:{issue.test_id}",
                severity=_rank(issue.severity) or "LOW",
                confidence=_rank(issue.confidence),
                message=str(issue.text),
            )
        )
    for name, reason in skipped:
        message = f"bandit could not scan this file: {reason}"
        findings.append(Finding(by_name[name], 0, SCAN_ERROR, "HIGH", None, message))
    return findings


def _rank(value: object) -> Severity | None:
    # bandit also has UNDEFINED, for checks that do not rate themselves.
    return cast(Severity, value) if value in SEVERITIES else None


def _literal_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


_UNKNOWN = ast.Constant(value=None)  # an argument passed through *args or **kwargs


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    """The expression passed for one parameter, ``_UNKNOWN`` when it may come from a splat."""
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):
            return _UNKNOWN
        if i == position:
            return arg
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
        if kw.arg is None:
            return _UNKNOWN
    return None


class _Aliases:
    """What each name in a module may stand for, as dotted names (``"subprocess.run"``)."""

    def __init__(self) -> None:
        self.bindings: dict[str, set[str]] = {}
        self.star_modules: set[str] = set()

    def bind(self, name: str, targets: Iterable[str]) -> None:
        kept = {t for t in targets if len(t) <= _MAX_QUALNAME}
        self.bindings.setdefault(name, set()).update(kept)

    def imported(self, name: str) -> set[str]:
        """What a bare name stands for through imports and assignments alone."""
        if name in self.bindings:
            return set(self.bindings[name])
        return {f"{module}.{name}" for module in self.star_modules}

    def resolve(self, node: ast.expr) -> set[str]:
        if isinstance(node, ast.Name):
            return self._resolve_name(node.id)
        if isinstance(node, ast.Attribute):
            return {f"{base}.{node.attr}" for base in self.resolve(node.value)}
        if isinstance(node, ast.Subscript):
            # m.__dict__["name"], vars(m)["name"], __builtins__["name"]
            key = _literal_str(node.slice)
            if key is None:
                return set()
            found = set()
            for base in self.namespaces(node.value):
                # sys.modules["m"] is the module m itself.
                found.add(key if base == "sys.modules" else f"{base}.{key}")
            return found
        if isinstance(node, ast.Call):
            return self._resolve_call(node)
        return set()

    def namespaces(self, node: ast.expr) -> set[str]:
        """Modules whose attributes ``node`` may hold (``m``, ``m.__dict__``, ``vars(m)``)."""
        return {base.removesuffix(".__dict__") for base in self.resolve(node)}

    def _resolve_name(self, name: str) -> set[str]:
        if name in self.bindings:
            return set(self.bindings[name])
        if name == "__builtins__":
            return {"builtins"}
        found = {name}
        if name in _BUILTIN_NAMES:
            found.add(f"builtins.{name}")
        found.update(f"{module}.{name}" for module in self.star_modules)
        return found

    def _resolve_call(self, call: ast.Call) -> set[str]:
        funcs = self.resolve(call.func)
        if "builtins.getattr" in funcs and len(call.args) >= 2:
            attr = _literal_str(call.args[1])
            if attr is not None:
                return {f"{base}.{attr}" for base in self.resolve(call.args[0])}
        if "builtins.vars" in funcs and len(call.args) == 1:
            # Only ever subscripted, where it stands for the module itself.
            return self.resolve(call.args[0])
        module = _literal_str(_argument(call, 0, "name"))
        if module is None or module.startswith("."):
            return set()
        if funcs & {"builtins.__import__", "importlib.__import__"}:
            # __import__("a.b") returns a, or a.b when a fromlist is given.
            return {module.partition(".")[0], module}
        if "importlib.import_module" in funcs:
            return {module}
        return set()


class _AliasCollector(ast.NodeVisitor):
    """First pass: every binding of a name to a module or module attribute, in source order."""

    def __init__(self, aliases: _Aliases) -> None:
        self.aliases = aliases

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases.bind(alias.asname, [alias.name])
            else:
                top = alias.name.partition(".")[0]
                self.aliases.bind(top, [top])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.level or not node.module:
                # The plugin's own module: it is scanned in its own file. Binding the name to
                # nothing stops it resolving as a same-named standard module.
                self.aliases.bind(alias.asname or alias.name, [])
            elif alias.name == "*":
                self.aliases.star_modules.add(node.module)
            else:
                self.aliases.bind(alias.asname or alias.name, [f"{node.module}.{alias.name}"])

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assign(target, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._assign(node.target, node.value)
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._assign(node.target, node.value)
        self.generic_visit(node)

    def _assign(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            resolved = self.aliases.resolve(value)
            if resolved:
                self.aliases.bind(target.id, resolved)
        elif (
            isinstance(target, ast.Tuple | ast.List)
            and isinstance(value, ast.Tuple | ast.List)
            and len(target.elts) == len(value.elts)
        ):
            for sub_target, sub_value in zip(target.elts, value.elts, strict=True):
                self._assign(sub_target, sub_value)


class _SummitRules(ast.NodeVisitor):
    """Second pass: Summit's rules, reported against the names resolved in the first."""

    def __init__(self, file: str, aliases: _Aliases, *, network_access: bool) -> None:
        self.file = file
        self.aliases = aliases
        self.network_access = network_access
        self.findings: list[Finding] = []

    @classmethod
    def run(cls, tree: ast.Module, file: str, *, network_access: bool) -> list[Finding]:
        aliases = _Aliases()
        _AliasCollector(aliases).visit(tree)
        rules = cls(file, aliases, network_access=network_access)
        rules.visit(tree)
        return rules.findings

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_use(node, alias.name, verb="imports")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        for alias in node.names:
            if alias.name != "*":
                self._check_use(node, f"{node.module}.{alias.name}", verb="imports")
            self._check_use(node, node.module, verb="imports")

    def visit_Name(self, node: ast.Name) -> None:
        # A bare name counts only through an import or assignment: a parameter called
        # ``socket`` is not the socket module.
        if isinstance(node.ctx, ast.Load):
            for name in self.aliases.imported(node.id):
                self._check_use(node, name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _PROCESS_METHODS:
            self._report(node, PROCESS_EXEC, f"{node.attr}(): plugins may not start processes")
        for name in self.aliases.resolve(node):
            self._check_use(node, name)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _literal_str(node.slice) is None:
            self._check_computed_lookup(node, node.value, "{}.__dict__[<computed>]")
        for name in self.aliases.resolve(node):
            self._check_use(node, name)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        funcs = self.aliases.resolve(node.func)
        for loader in sorted(funcs & _LOADERS.keys()):
            position, keyword = _LOADERS[loader]
            arg = _argument(node, position, keyword)
            if arg is not None and _literal_str(arg) is None:
                self._report(
                    node,
                    DYNAMIC_IMPORT,
                    f"{loader.removeprefix('builtins.')}() with a computed name: "
                    "the code it loads cannot be checked",
                )
        getattr_call = "builtins.getattr" in funcs and len(node.args) >= 2
        if getattr_call and _literal_str(node.args[1]) is None:
            self._check_computed_lookup(node, node.args[0], "getattr({}, <computed>)")
        # getattr(m, "x"), __import__("m") and the like name what they reach.
        for name in self.aliases.resolve(node):
            self._check_use(node, name)
        self.generic_visit(node)

    def _check_computed_lookup(self, node: ast.expr, namespace: ast.expr, shape: str) -> None:
        for module in sorted(self.aliases.namespaces(namespace) & _LOOKUP_GUARDED):
            self._report(
                node,
                DYNAMIC_IMPORT,
                f"{shape.format(module)}: which function it reaches cannot be checked",
            )

    def _check_use(self, node: ast.AST, name: str, *, verb: str = "uses") -> None:
        root, _, rest = name.partition(".")
        attr = rest.partition(".")[0]
        if (
            any(name == m or name.startswith(f"{m}.") for m in _PROCESS_MODULES)
            or name in _PROCESS_CALLS
            or (
                root in _OS_MODULES
                and (attr in _OS_EXEC_NAMES or attr.startswith(_OS_EXEC_PREFIXES))
            )
        ):
            self._report(node, PROCESS_EXEC, f"{verb} {name}: plugins may not start processes")
        elif root in _NATIVE_MODULES:
            self._report(
                node, NATIVE_CODE, f"{verb} {name}: native code escapes every Python-level check"
            )
        elif not self.network_access and (
            name == "socket" or root == "_socket" or name in _SOCKET_CALLS
        ):
            self._report(
                node,
                RAW_SOCKET,
                f"{verb} {name}: raw sockets need the network:access permission",
            )

    def _report(self, node: ast.AST, rule: str, message: str) -> None:
        line = getattr(node, "lineno", 0)
        self.findings.append(Finding(self.file, line, rule, "HIGH", None, message))
