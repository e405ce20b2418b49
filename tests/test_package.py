"""The package's shape: a library apart from the experiment harness, its public names, its README."""

import ast
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_scl

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_scl"
README = (ROOT / "README.md").read_text()


def modules():
    # `__main__` modules run a job when imported: scripts, not APIs.
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem == "__main__":
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


def test_the_library_depends_on_keras_keras_hub_and_numpy_only():
    import tomllib  # Python 3.11+, as the test set-up

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", requirement)[0] for requirement in project["dependencies"]}
    assert names == {"keras", "keras-hub", "numpy"}
    assert set(project["optional-dependencies"]) >= {"torch", "experiments", "minilm", "bench", "plots", "test"}


@pytest.mark.harness  # a fresh JAX process whatever the pass: once is enough
def test_the_library_trains_on_jax_without_the_extras():
    """What `pip install keras-scl jax` gives: no torch, scikit-learn, matplotlib, TFDS, nor the harness."""
    script = textwrap.dedent(
        """
        import sys
        BLOCKED = ("torch", "sklearn", "matplotlib", "tensorflow_datasets", "keras_scl.experiments")
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
                    raise ImportError(f"{name} is blocked: the library must not need it")
        sys.meta_path.insert(0, Blocker())
        import keras_hub, numpy as np
        import keras_scl
        backbone = keras_hub.models.RobertaBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                                                    intermediate_dim=16, max_sequence_length=8)
        classifier = keras_hub.models.RobertaTextClassifier(backbone, num_classes=2, preprocessor=None)
        model = keras_scl.SCLClassifier(classifier)
        model.compile()
        rng = np.random.default_rng(0)
        x = {"token_ids": rng.integers(3, 50, (8, 8)), "padding_mask": np.ones((8, 8), bool)}
        history = model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
        print("trained:", sorted(history.history))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained: ['accuracy', 'ce_loss', 'loss', 'positive_fraction', 'scl_loss']" in result.stdout


@pytest.mark.parametrize("name, path", list(modules()), ids=[name for name, _ in modules()])
def test_every_module_names_its_public_api(name, path):
    torch_only = {f"keras_scl.training.{job}" for job in ("torch_step", "fused_layers", "fused_adam", "step_logs")}
    if name in torch_only and keras.backend.backend() != "torch":
        pytest.skip("imports torch, loaded by the torch backend only")
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert all(hasattr(module, public) for public in module.__all__)
    assert not [public for public in module.__all__ if public.startswith("_")]


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for name, path in list(modules()) + [(p.stem, p) for p in (ROOT / "tests").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_scl"):
                offenders += [f"{name}: {alias.name}" for alias in node.names if alias.name.startswith("_")]
    assert offenders == []


def api_reference():
    section = README[README.index("\n## API\n") :]
    section = section[: section.index("\n#", 1)]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.M)


def test_the_readme_api_reference_is_keras_scl_all():
    names = api_reference()
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(keras_scl.__all__)


def requirement_closure(requirements):
    """The installed distributions (canonical names) that `requirements` pull in, recursively, markers applied."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [(Requirement(text), ()) for text in requirements]
    while todo:
        requirement, extras = todo.pop()
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
            continue
        name = canonicalize_name(requirement.name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here
        if name not in seen:
            seen.add(name)
            todo += [(Requirement(text), tuple(requirement.extras)) for text in requires]
    return seen


def modules_of_unnamed_extras(named):
    """Top-level modules that only the extras not in `named` bring (what a user with `named` lacks)."""
    from importlib import metadata

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # The backend the test runs on is the user's own (the README: `pip install keras-scl jax`).
    backend = {"jax": ["jax"], "torch": ["torch"]}.get(keras.backend.backend(), [])
    kept = requirement_closure(project["dependencies"] + [r for e in named for r in extras[e]] + backend)
    kept.add(project["name"])  # an extra may name another of this package's own (`keras-scl[plots]`)
    unnamed = requirement_closure([r for e in extras if e not in named for r in extras[e]]) - kept
    blocked = set()
    for module, distributions in metadata.packages_distributions().items():
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions}
        if names & unnamed and not names & kept:
            blocked.add(module)
    return blocked


def run_python(code, folder):
    """Runs `code` in a fresh Python process in `folder`, on this backend; its completed process, checked."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.harness  # an example in a fresh process, as the other examples: run once, in the torch pass
def test_the_readme_quick_start_and_deployment_run_with_only_the_extras_its_install_line_names(tmp_path):
    install = README[README.index("## Install") :]
    named = re.search(r'pip install "keras-scl\[([\w,]+)\]"', install).group(1).split(",")
    blocked = modules_of_unnamed_extras(named)
    assert {"matplotlib", "tensorflow_datasets"} <= blocked  # the `experiments` extra of `make test`: the check bites
    quick_start = README[README.index("## Quick start") :]
    code = re.search(r"```python\n(.*?)```", quick_start, flags=re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    # The modules of the extras the line leaves out are not found, as on the user's machine (every finder
    # answers None for them, so that `importlib.util.find_spec` probes see them missing too).
    guard = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {sorted(blocked)!r}
        class Uninstalled:
            def __init__(self, finder):
                self.finder = finder
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    return None
                return self.finder.find_spec(name, path, target)
            def __getattr__(self, name):
                return getattr(self.finder, name)
        sys.meta_path[:] = [Uninstalled(finder) for finder in sys.meta_path]
        try:
            import matplotlib
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the guard let matplotlib through")
        """
    )
    result = run_python(guard + code, tmp_path)
    assert re.search(r"array\(\['(good|bad)'\], dtype=object\), array\(\[\[0\.\d+, 0\.\d+\]\]\)", result.stdout)
    loaded = keras_scl.SCLClassifier.from_preset(str(tmp_path / "reviews_classifier"))
    assert loaded.embedding == "mean" and loaded.label_names == ("bad", "good")

    # The README's deployment, in a new process on the folder the quick start wrote, with the same extras.
    deploy = README[README.index("## Deploy a trained model") :]
    code = re.search(r"```python\n(.*?)```", deploy, flags=re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    result = run_python(guard + code, tmp_path)
    expected = list(zip(*loaded.predict_labels(["a fine film", "a bore"], verbose=0), strict=True))
    printed = re.findall(r"^(good|bad) ([\d.]+)$", result.stdout, flags=re.M)
    assert [name for name, _ in printed] == [name for name, _ in expected]
    np.testing.assert_allclose([float(value) for _, value in printed], [p.max() for _, p in expected], atol=1e-3)


def test_scl_classifier_stays_one_job_in_at_most_325_lines():
    # fit/evaluate/predict live in keras_scl.training.task, what `x` is in keras_scl.training.inputs, the
    # objective in keras_scl.training.objective, the memory in keras_scl.memory, the tapping in keras_scl.tapping.
    tree = ast.parse((PACKAGE / "models.py").read_text())
    (node,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "SCLClassifier"]
    assert node.end_lineno - node.lineno + 1 <= 325
