"""Views of an embedding space: 2-D projections, silhouette scores, PNG plots."""

import importlib.util

import numpy as np

from keras_scl.validation import check_one_of

__all__ = ["new_figure", "plot_embeddings", "project_2d", "require_plot_libraries", "silhouette"]

PLOT_LIBRARIES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def require_plot_libraries(user):
    """Raises an ImportError naming the `plots` extra when scikit-learn or matplotlib is missing."""
    missing = [package for module, package in PLOT_LIBRARIES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(
            f"{user} needs {' and '.join(missing)}, which the library does not install by itself: "
            'pip install "keras-scl[plots]"'
        )


def new_figure(**kwargs):
    """A matplotlib `Figure` for a file, made without pyplot: no backend is chosen, no global state is touched."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def project_2d(embeddings, method="tsne", seed=0):
    """2-D coordinates of `embeddings` by t-SNE (scikit-learn) or PCA."""
    check_one_of("method", method, ("tsne", "pca"))
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(embeddings)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(embeddings) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)


def silhouette(embeddings, labels):
    """Silhouette score of the L2-normalised embeddings under cosine distance (`nan` for one class)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(np.asarray(embeddings, dtype=np.float64), labels, metric="cosine"))


def plot_embeddings(panels, path, method="tsne", seed=0, label_names=None, title="test-set embeddings"):
    """Side-by-side 2-D views of embeddings coloured by label (the paper's Figure 2).

    Each panel's title carries its silhouette score.

    Args:
        panels: `{title: (embeddings, labels)}`, e.g. `{"CE": ..., "CE+SCL": ...}`.
        path: PNG file to write.
        method: `"tsne"` or `"pca"`. Defaults to `"tsne"`.
        seed: Seed of the projection. Defaults to `0`.
        label_names: Names for the legend; label `i` is `label_names[i]`.
            Defaults to `"label i"`.
        title: What the figure shows, after the method's name. Defaults to
            `"test-set embeddings"`.
    """
    figure = new_figure(figsize=(4.2 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (panel_title, (embeddings, labels)) in zip(axes[0], panels.items(), strict=True):
        points = project_2d(embeddings, method, seed)
        for label in np.unique(labels):
            chosen = labels == label
            name = label_names[label] if label_names is not None else f"label {label}"
            axis.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.7, label=str(name))
        axis.set_title(f"{panel_title}  (silhouette {silhouette(embeddings, labels):.2f})")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.legend(markerscale=2, fontsize=8)
    figure.suptitle(f"{'t-SNE' if method == 'tsne' else 'PCA'} of {title}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
