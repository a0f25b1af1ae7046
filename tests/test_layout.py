"""The layering stays true: a pipeline module imports only its own subpackage and the layers below it (module
level and inside functions), no two subpackages of one layer import each other, nothing in pipeline/ imports
stages/, and the head/ensemble stages stay free of torch at import. Also: README's layout section is the tree."""
import ast
import re
from pathlib import Path

from tests.conftest import ROOT

# lowest first; plumbing is the top-level modules of pipeline/ (params, paths, io, cli, devices, preds)
LAYERS = [{"plumbing"}, {"data"}, {"models"}, {"cache"}, {"train"}, {"heads"}, {"ensemble"}, {"predict"}]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def owner(module: str) -> str:
    """'pipeline.data.load' -> 'data'; 'pipeline.io' / 'pipeline' -> 'plumbing'."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / "pipeline" / parts[1]).is_dir()):
        return parts[1]
    return "plumbing"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if (ROOT / node.module.replace(".", "/") / f"{a.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_subpackage_is_placed_in_a_layer():
    pkgs = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert pkgs == set(RANK) - {"plumbing"}


def test_imports_point_down_the_layers():
    bad = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        me = owner(module_name(path))
        for mod in imports(path):
            if mod.startswith("stages"):
                bad.append(f"{path.relative_to(ROOT)} imports {mod} (pipeline never imports stages)")
            elif mod.startswith("pipeline"):
                other = owner(mod)
                if other != me and RANK[other] >= RANK[me]:
                    bad.append(f"{path.relative_to(ROOT)} ({me}) imports {mod} ({other})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        graph[module_name(path)] = {m for m in imports(path) if m.startswith("pipeline.") and m in
                                    {module_name(p) for p in (ROOT / "pipeline").rglob("*.py")}}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph.get(m, ()):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_readme_layout_section_is_the_tree():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"## Layout\n(.*?)\n## ", readme, re.S)
    assert section, "README.md has no '## Layout' section"
    listed = set(re.findall(r"^\s*`?(pipeline/[\w/]+\.py|pipeline/\w+/|stages/|tests/\w*/?)`?", section[1], re.M))
    modules = {f"pipeline/{p.relative_to(ROOT / 'pipeline')}" for p in (ROOT / "pipeline").glob("*.py")
               if p.name != "__init__.py"}
    pkgs = {f"pipeline/{p.parent.name}/" for p in (ROOT / "pipeline").glob("*/__init__.py")}
    named = set(re.findall(r"(pipeline/[\w/]+\.py|pipeline/\w+/)", section[1]))
    assert named == modules | pkgs, f"README layout vs tree: missing {sorted((modules | pkgs) - named)}, " \
                                    f"not in the tree {sorted(named - (modules | pkgs))}"
    for pkg in pkgs:  # every module of a subpackage is named on its line
        files = {p.stem for p in (ROOT / pkg).glob("*.py") if p.name != "__init__.py"}
        line = next(ln for ln in section[1].splitlines() if pkg in ln)
        missing = files - set(re.findall(r"\w+", line))
        assert not missing, f"README layout line for {pkg} misses {sorted(missing)}"
    assert listed


# heap.py: allocator settings, no effect on any output
PLUMBING_UNTRACKED = {"pipeline/params.py", "pipeline/paths.py", "pipeline/io.py", "pipeline/cli.py",
                      "pipeline/heap.py"}


def closure(module: str) -> set[str]:
    """Files of every pipeline module `module` imports, transitively (function-level imports included)."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        path = ROOT / (m.replace(".", "/") + ".py")
        if m in seen or not path.exists():
            continue
        seen.add(m)
        todo += [i for i in imports(path) if i.startswith("pipeline.")]
    return {m.replace(".", "/") + ".py" for m in seen}


def test_each_stage_depends_on_every_module_it_imports():
    """dvc.yaml's deps decide what reruns: a module a stage imports but does not list would change its
    output without DVC noticing."""
    import yaml

    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        stage = stage.get("do", stage)
        script = stage["cmd"].split()[2]  # python -m stages.x ...
        if name == "check":
            continue  # validates params.yaml only: its deps are the params schema
        need = closure(script) - PLUMBING_UNTRACKED - {script.replace(".", "/") + ".py"}
        missing = need - set(stage["deps"])
        assert not missing, f"dvc.yaml stage {name}: imports but does not depend on {sorted(missing)}"
        assert all((ROOT / d).exists() for d in stage["deps"] if d.startswith(("pipeline/", "stages/")))


def test_dvc_lock_holds_only_the_stages_of_dvc_yaml():
    """`dvc repro` never drops the lock entry of a stage that left dvc.yaml (an old layout's), and DVC rewrites
    the whole lock through ruamel's pure-Python round trip after every stage it runs: dead entries are paid
    for in every rerun (0.28 s a stage at 27.7 KB here, 0.21 s at 19.2 KB: benchmarks/RESULTS.md) and describe outputs nobody
    writes."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    expected = set()
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:  # foreach: ${section}, a mapping of params.yaml
            section = stage["foreach"].removeprefix("${").removesuffix("}")
            expected |= {f"{name}@{key}" for key in params[section]}
        else:
            expected.add(name)
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked == expected, f"dvc.lock: stale {sorted(locked - expected)}, missing {sorted(expected - locked)}"
