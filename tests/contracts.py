"""Slicehub's own import-linter contract type: no module uses another module's private names.

import-linter checks forbidden imports, layers, independence and private *modules*, but not
private *names*: `from ..slicing import _join_hub_log` in one module reaches into another. This
contract type flags, in every module of the root packages:

- `from X import _name` (at any depth, in a function too) where X is another module; a private
  submodule (`from . import _helpers`) is allowed only inside its parent package, as
  import-linter's `private_modules` contract has it;
- `X._name` where X is a module bound by an import (`from .. import slicing; slicing._f()`).

Dunder names (`__version__`) are public, and so is anything a module does with its own names.
grimp's graph says which modules there are; the names come from each module's syntax tree, not
from grimp's `get_import_details`, whose `line_contents` is only an import's first line (in
`from X import (` over several lines the names are not there) and which does not see `X._name`.

pyproject.toml loads it with `contract_types = ["private_names: tests.contracts.PrivateNames"]`:
`lint-imports` puts its working directory first on `sys.path`, so run from the repository root
(`make contracts`, `make test`, CI) `tests.contracts` is importable from a clean checkout.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter import Contract, ContractCheck, output


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class PrivateNames(Contract):
    """No options: every module of the root packages is read."""

    type_name = "private_names"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = self.session_options["root_packages"]
        modules = graph.modules
        violations = []
        for importer in sorted(modules):
            if any(inside(importer, root) for root in roots):
                violations += _private_uses(importer, modules, roots)
                output.verbose_print(verbose, f"Read {importer}.")
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for found in check.metadata["violations"]:
            output.print_error(
                f"{found['importer']} is not allowed to use {found['imported']}.{found['name']}:"
            )
            output.new_line()
            output.print_error(
                f"-   {found['importer']}:{found['line_number']}: {found['line_contents']}",
                bold=False,
            )
            output.new_line()


def _source_path(module: str) -> Path:
    """The file grimp read for `module`: found from its root package as grimp finds it, without
    importing anything."""
    root, *parts = module.split(".")
    spec = importlib.util.find_spec(root)
    if spec is None or spec.origin is None:
        raise ValueError(f"Cannot find the package {root!r}.")
    base = Path(spec.origin).parent.joinpath(*parts)
    package_init = base / "__init__.py"
    return package_init if package_init.exists() else base.with_suffix(".py")


def _private_uses(importer: str, modules: set[str], roots: list[str]) -> list[dict]:
    path = _source_path(importer)
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    package = importer.split(".")
    if path.name != "__init__.py":
        package.pop()
    bound: dict[str, str] = {}  # a name an import binds to a module -> that module
    uses = []

    def use(imported: str, name: str, node: ast.AST) -> None:
        line = lines[node.lineno - 1].strip()
        uses.append(
            {
                "importer": importer,
                "imported": imported,
                "name": name,
                "line_number": node.lineno,
                "line_contents": line,
            }
        )

    def reach_into(module: str, node: ast.AST) -> None:
        """A private module (`pkg._helpers`, or one inside it) is its package's private name."""
        parts = module.split(".")
        for depth, part in enumerate(parts[1:], start=1):
            if is_private(part):
                package_name = ".".join(parts[:depth])
                if not inside(importer, package_name):
                    use(package_name, part, node)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if any(inside(alias.name, root) for root in roots):
                    reach_into(alias.name, node)
                if alias.name in modules:
                    key = alias.asname or alias.name.partition(".")[0]
                    bound[key] = alias.name if alias.asname else key
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(anchor + ([node.module] if node.module else []))
            if base not in modules or not any(inside(base, root) for root in roots):
                continue  # another project's privates are its own business
            reach_into(base, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    bound[alias.asname or alias.name] = submodule
                    reach_into(submodule, node)
                elif is_private(alias.name) and base != importer:
                    use(base, alias.name, node)

    def module_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return bound.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = module_of(node.value)
            if parent and f"{parent}.{node.attr}" in modules:
                return f"{parent}.{node.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = module_of(node.value)
            if owner is None or owner == importer:
                continue
            if f"{owner}.{node.attr}" in modules:
                reach_into(f"{owner}.{node.attr}", node)
            else:
                use(owner, node.attr, node)
    return sorted(uses, key=lambda found: found["line_number"])
