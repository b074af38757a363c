"""The layout's rules, checked on the source and on real imports: commands do not import each
other, ``import portscope`` stays light, every backend meets the typed contract, exit codes go
through one enum."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from portscope import backends
from portscope.backends.base import Backend, RawBackend
from portscope.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parents[2]     # the checkout: CI installs a copy (not editable)
PACKAGE = ROOT / "src" / "portscope"
COMMANDS = PACKAGE / "cli" / "commands"


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved against
    ``package``, the dotted name of the module's package), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_import_walker_sees_relative_and_sibling_imports(tmp_path):
    source = tmp_path / "kill.py"
    source.write_text("from .check import diagnosis_json\nfrom . import who\n"
                      "def f():\n    from ...render import kill\n")
    found = _imported_modules(source, "portscope.cli.commands")
    assert {"portscope.cli.commands.check", "portscope.cli.commands.who",
            "portscope.render.kill"} <= found


def test_no_command_module_imports_another_command():
    names = {p.stem for p in COMMANDS.glob("*.py") if p.stem != "__init__"}
    assert {"check", "kill", "explain", "who"} <= names
    offenders = []
    for path in sorted(COMMANDS.glob("*.py")):
        imported = _imported_modules(path, "portscope.cli.commands")
        others = {f"portscope.cli.commands.{n}" for n in names - {path.stem}}
        offenders += [f"{path.name} imports {m}" for m in sorted(imported & others)]
    assert offenders == []


def test_commands_return_exit_statuses_not_numbers():
    """Exit codes come from ``ExitStatus`` (cli/status.py), never a bare number or an
    ``EXIT_*`` constant, in every command module and in ``cli.main``."""
    offenders = []
    for path in [PACKAGE / "cli" / "__init__.py", *sorted(COMMANDS.glob("*.py"))]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id.startswith("EXIT_"):
                offenders.append(f"{path.name}:{node.lineno} {node.id}")
            if (isinstance(node, ast.FunctionDef) and node.name in ("run", "main")):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Constant) \
                            and isinstance(ret.value.value, int):
                        offenders.append(f"{path.name}:{ret.lineno} return {ret.value.value}")
    assert offenders == []


def test_import_portscope_loads_no_heavy_or_optional_library():
    code = ("import sys, portscope\n"
            "heavy = ('rich', 'textual', 'prometheus_client', 'sqlite3', 'psutil', "
            "'ipaddress', 'portscope.cli', 'portscope.render', 'portscope.snapshot')\n"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []


def test_commands_without_sockets_do_not_load_snapshot():
    """``render.listing`` and ``cli.common`` name ``SnapshotStream`` for type checkers only:
    a command that writes rows, not sockets (``services``), does not pay for ``snapshot``
    and the backends it loads."""
    code = ("import sys, io, contextlib, portscope.render.listing, portscope.cli.common\n"
            "from portscope.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    code = main(['services', '80'])\n"
            "print(code, 'http' in out.getvalue(), 'portscope.snapshot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0", "True", "False"]


def test_public_names_still_load_lazily():
    code = ("import sys, portscope\n"
            "assert 'portscope.kill' not in sys.modules\n"
            "from portscope import plan_kill, free_port, take_snapshot, Socket\n"
            "print(plan_kill.__module__, free_port.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["portscope.kill.plan", "portscope.kill.verify"]


def _loaded_backends():
    for name in backends.BACKENDS:
        try:
            yield name, backends.load(name)
        except BackendUnavailable:
            continue


@pytest.mark.parametrize("name", backends.BACKENDS)
def test_every_backend_meets_the_protocol(name):
    try:
        module = backends.load(name)
    except BackendUnavailable:
        pytest.skip(f"{name} cannot run here")
    assert isinstance(module, Backend)
    assert module.NAME == name and isinstance(module.PROVIDES_OWNERS, bool)
    protocols = [Backend, RawBackend] if isinstance(module, RawBackend) else [Backend]
    for protocol in protocols:
        for member in ("dump", "dump_unix", "collect", "inodes", "split", "decode"):
            wanted = getattr(protocol, member, None)
            if wanted is None or member not in vars(protocol):
                continue
            # every parameter the contract names can be passed, by name, with its default
            have = inspect.signature(getattr(module, member)).parameters
            for parameter in list(inspect.signature(wanted).parameters.values())[1:]:
                assert parameter.name in have, f"{name}.{member} lacks {parameter.name}"
                assert (have[parameter.name].default is inspect.Parameter.empty) == \
                    (parameter.default is inspect.Parameter.empty), \
                    f"{name}.{member}({parameter.name}) differs in having a default"


def test_only_netlink_keeps_raw_replies():
    raw = {name for name, module in _loaded_backends() if isinstance(module, RawBackend)}
    assert raw == ({"netlink"} if sys.platform.startswith("linux") else set())


def test_a_module_without_the_contract_is_no_backend():
    import portscope.ports as not_a_backend
    assert not isinstance(not_a_backend, Backend)


def _readme_tree() -> tuple[set[str], set[str]]:
    """The README's "How the code is laid out" block: (every path it names, the directories
    whose contents it lists), relative to src/portscope."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## How the code is laid out", 1)[1].split("```", 2)[1]
    named: set[str] = set()
    listed: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines()[2:]:          # after the opening fence and src/portscope/
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if parent:
            listed.add(parent)
        path = f"{parent}{name}"
        assert path.rstrip("/") not in named, f"the README names {path} twice"
        named.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((indent, path))
    return named, listed


def test_the_readme_layout_matches_the_tree():
    named, listed = _readme_tree()
    actual: set[str] = set()
    for path in PACKAGE.rglob("*"):
        relative = path.relative_to(PACKAGE)
        parent = str(relative.parent) + "/" if relative.parent != Path(".") else ""
        if "__pycache__" in relative.parts or (parent and path.name == "__init__.py"):
            continue
        if parent == "" or parent in listed:       # a folder listed without its contents
            actual.add(str(relative))
    assert named - actual == set(), "the README names what does not exist"
    assert actual - named == set(), "the README leaves out what exists"


def test_the_all_extra_installs_every_optional_extra():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    features = {name: deps for name, deps in extras.items() if name not in ("all", "test")}
    assert features, "no optional extra"
    missing = {dep for deps in features.values() for dep in deps} - set(extras["all"])
    assert missing == set()
    readme = (ROOT / "README.md").read_text()
    assert "pip install 'portscope[all]'" in readme
    assert all(f"`{name}`" in readme for name in features)
