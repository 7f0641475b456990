"""The source scanner on small plugins written into tmp_path, with the real bandit."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from orchestrator.security import Finding, blocking, scan_source, summarize


def write(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def scan(root: Path, source: str, *, network_access: bool = False) -> list[Finding]:
    write(root, {"plugin.py": source})
    return scan_source(root, network_access=network_access)


def hits(findings: list[Finding], rule: str) -> list[int]:
    """Lines where ``rule`` was reported."""
    return [f.line for f in findings if f.rule == rule]


def test_nosec_comment_does_not_hide_a_shell_call(tmp_path: Path) -> None:
    findings = scan(
        tmp_path,
        """\
        import subprocess
        subprocess.call("ls -l", shell=True)  # nosec
        subprocess.call("ls -l", shell=True)  # nosec: B602
        """,
    )
    assert hits(findings, "bandit:B602") == [2, 3]
    b602 = next(f for f in findings if f.rule == "bandit:B602")
    assert b602.confidence in ("LOW", "MEDIUM", "HIGH")
    assert b602.file == "plugin.py"
    assert hits(findings, "summit:process-exec") == [1, 2, 3]


def test_eval_is_reported(tmp_path: Path) -> None:
    findings = scan(tmp_path, "result = eval(input())\n")
    assert [(f.rule, f.severity) for f in findings] == [("bandit:B307", "MEDIUM")]


def test_yaml_load_is_reported(tmp_path: Path) -> None:
    findings = scan(
        tmp_path,
        """\
        import yaml

        def read(text):
            return yaml.load(text)
        """,
    )
    assert hits(findings, "bandit:B506") == [4]


def test_a_clean_plugin_has_no_findings(tmp_path: Path) -> None:
    findings = scan(
        tmp_path,
        """\
        import importlib
        import json
        from dataclasses import dataclass

        codecs = importlib.import_module("codecs")


        @dataclass
        class Count:
            words: int


        def analyze(document: dict) -> str:
            text = str(document.get("text", ""))
            return json.dumps({"count": Count(len(text.split())).words})
        """,
    )
    assert findings == []


def test_a_file_that_does_not_parse_is_a_high_finding(tmp_path: Path) -> None:
    write(tmp_path, {"broken.py": "def f(:\n    pass\n", "other.py": "eval('1')\n"})
    findings = scan_source(tmp_path, network_access=False)
    broken = [f for f in findings if f.file == "broken.py"]
    assert [(f.rule, f.severity, f.line) for f in broken] == [("summit:syntax-error", "HIGH", 1)]
    # The rest of the plugin is still scanned.
    assert hits(findings, "bandit:B307") == [1]


def test_null_bytes_are_a_syntax_finding_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "plugin.py").write_bytes(b"x = 1\x00\n")
    findings = scan_source(tmp_path, network_access=False)
    assert [f.rule for f in findings] == ["summit:syntax-error"]


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import subprocess\nsubprocess.run(['ls'])\n", [1, 2]),
        ("from subprocess import run as r\nr(['ls'])\n", [1, 2]),
        ("import subprocess as sp\nsp.Popen(['ls'])\n", [1, 2]),
        ("import os\nos.system('id')\n", [2]),
        ("import os as o\no.popen('id')\n", [2]),
        ("from os import execv\nexecv('/bin/sh', [])\n", [1, 2]),
        ("import os\nos.spawnlp(os.P_WAIT, 'ls')\n", [2]),
        ("import os\npid = os.fork()\n", [2]),
        ("import posix\nposix.system('id')\n", [2]),
        ("import pty\npty.spawn('/bin/sh')\n", [2]),
        ("import os\nshell = os.system\nshell('id')\n", [2, 3]),
        ("import os\ngetattr(os, 'system')('id')\n", [2]),
        ("__import__('os').system('id')\n", [1]),
        ("from os import *\nsystem('id')\n", [2]),
        ("import asyncio\nasyncio.create_subprocess_exec('ls')\n", [2]),
    ],
)
def test_process_execution(tmp_path: Path, source: str, lines: list[int]) -> None:
    findings = scan(tmp_path, source)
    assert hits(findings, "summit:process-exec") == lines
    assert all(f.severity == "HIGH" for f in findings if f.rule.startswith("summit:"))


def test_rebinding_a_name_later_does_not_hide_its_earlier_use(tmp_path: Path) -> None:
    findings = scan(tmp_path, "import os as o\no.system('id')\no = print\n")
    assert hits(findings, "summit:process-exec") == [2]


def test_os_functions_that_start_nothing_are_fine(tmp_path: Path) -> None:
    findings = scan(tmp_path, "import os\nfrom os import path\nos.getcwd()\npath.join('a')\n")
    assert findings == []


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import ctypes\n", [1]),
        ("from ctypes import cdll\nlibc = cdll.LoadLibrary('libc.so.6')\n", [1, 2]),
        ("import ctypes as c\nc.CDLL('libc.so.6')\n", [1, 2]),
        ("import _ctypes\n", [1]),
        ("from cffi import FFI\n", [1]),
        ("import importlib\nimportlib.import_module('ctypes')\n", [2]),
    ],
)
def test_native_code(tmp_path: Path, source: str, lines: list[int]) -> None:
    assert hits(scan(tmp_path, source), "summit:native-code") == lines


def test_a_shipped_extension_module_is_native_code(tmp_path: Path) -> None:
    (tmp_path / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    findings = scan_source(tmp_path, network_access=False)
    assert [(f.file, f.line, f.rule) for f in findings] == [
        ("fast.cpython-311-x86_64-linux-gnu.so", 0, "summit:native-code")
    ]


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import importlib\nimportlib.import_module(name)\n", [2]),
        ("from importlib import import_module as im\nim(name)\n", [2]),
        ("import importlib\nimportlib.__import__(name)\n", [2]),
        ("__import__(name)\n", [1]),
        ("__import__(*args)\n", [1]),
        ("import builtins\ngetattr(builtins, name)('x')\n", [2]),
        ("getattr(__builtins__, name)\n", [1]),
        ("import builtins as b\nb.__dict__[name]\n", [2]),
        ("import os\ngetattr(os, name)('id')\n", [2]),
        ("import runpy\nrunpy.run_path(path)\n", [2]),
    ],
)
def test_dynamic_import(tmp_path: Path, source: str, lines: list[int]) -> None:
    assert hits(scan(tmp_path, source), "summit:dynamic-import") == lines


@pytest.mark.parametrize(
    "source",
    [
        "import importlib\nimportlib.import_module('json')\n",
        "__import__('json')\n",
        "import builtins\nlength = getattr(builtins, 'len')\n",
        "value = getattr(obj, name)\n",
    ],
)
def test_literal_imports_and_ordinary_getattr_are_not_dynamic(tmp_path: Path, source: str) -> None:
    assert hits(scan(tmp_path, source), "summit:dynamic-import") == []


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import socket\nconn = socket.socket()\n", [1, 2]),
        ("from socket import create_connection as cc\ncc(('example.com', 80))\n", [1, 2]),
        ("import importlib\nimportlib.import_module('socket')\n", [2]),
    ],
)
def test_raw_sockets_depend_on_network_access(
    tmp_path: Path, source: str, lines: list[int]
) -> None:
    assert hits(scan(tmp_path, source, network_access=False), "summit:raw-socket") == lines
    assert hits(scan(tmp_path, source, network_access=True), "summit:raw-socket") == []


def test_a_parameter_named_socket_is_not_the_socket_module(tmp_path: Path) -> None:
    findings = scan(tmp_path, "async def handle(socket):\n    await socket.send(b'x')\n")
    assert findings == []


def test_order_is_file_line_rule_without_duplicates(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "b.py": "import os\nos.system('a'); os.system('b')\n",
            "a/z.py": "eval('1')\n",
            "a.py": "import socket\n",
        },
    )
    findings = scan_source(tmp_path, network_access=False)
    keys = [(f.file, f.line, f.rule) for f in findings]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys))
    assert [f.file for f in findings if f.rule.startswith("summit:")] == ["a.py", "b.py"]
    assert hits(findings, "summit:process-exec") == [2]


def test_tool_folders_are_skipped_and_tests_are_scanned(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".venv/lib/mod.py": "eval('1')\n",
            ".git/hooks/x.py": "eval('1')\n",
            "__pycache__/x.py": "eval('1')\n",
            "tests/test_plugin.py": "eval('1')\n",
        },
    )
    findings = scan_source(tmp_path, network_access=False)
    assert [f.file for f in findings] == ["tests/test_plugin.py"]


def test_scanning_is_silent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in ("bandit", "stevedore")}
    write(tmp_path, {f"m{i}.py": "import os\nos.system('x')\n" for i in range(60)})
    findings = scan_source(tmp_path, network_access=False)
    assert len(hits(findings, "summit:process-exec")) == 60
    assert capsys.readouterr() == ("", "")
    assert [r for r in caplog.records if r.name.startswith(("bandit", "stevedore"))] == []
    assert {name: logging.getLogger(name).level for name in levels} == levels


def test_a_missing_folder_is_an_error_not_a_clean_scan(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        scan_source(tmp_path / "absent", network_access=False)


def finding(severity: str, line: int = 1) -> Finding:
    return Finding("plugin.py", line, "bandit:B000", severity, "HIGH", "m")  # type: ignore[arg-type]


def test_summarize_counts_every_severity() -> None:
    findings = [finding("HIGH"), finding("LOW", 2), finding("LOW", 3)]
    assert summarize(findings) == {"LOW": 2, "MEDIUM": 0, "HIGH": 1}
    assert summarize([]) == {"LOW": 0, "MEDIUM": 0, "HIGH": 0}


def test_blocking_keeps_findings_at_or_above_the_threshold() -> None:
    low, medium, high = finding("LOW"), finding("MEDIUM", 2), finding("HIGH", 3)
    assert blocking([low, medium, high]) == [high]
    assert blocking([low, medium, high], fail_on="MEDIUM") == [medium, high]
    assert blocking([low, medium, high], fail_on="LOW") == [low, medium, high]
    with pytest.raises(ValueError, match="fail_on"):
        blocking([high], fail_on="SEVERE")  # type: ignore[arg-type]


def test_finding_to_json() -> None:
    assert finding("HIGH").to_json() == {
        "file": "plugin.py",
        "line": 1,
        "rule": "bandit:B000",
        "severity": "HIGH",
        "confidence": "HIGH",
        "message": "m",
    }
