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
    if name.endswith("torch_step") and keras.backend.backend() != "torch":
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


def test_the_readme_quick_start_runs(tmp_path):
    quick_start = README[README.index("## Quick start") :]
    code = re.search(r"```python\n(.*?)```", quick_start, flags=re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\[\[\s*-?\d", result.stdout)  # the printed logits
    assert (tmp_path / "classifier.keras").exists()
