"""Figures, drawn with matplotlib's Agg canvas: the reliability diagram of one run, the
combined reliability curves of several methods and the t-SNE of student and superior.

The figure functions of the report return the Figure and what they plotted (points,
classes), so tests can check the content, not only that a file was written.

We build a `Figure` and attach a `FigureCanvasAgg` instead of using pyplot, so
that no global backend is set or changed for other users of matplotlib in the
process, and no figure lingers in pyplot's registry.
"""
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from aikd_jax import evaluation, paths


def _draw_reliability(ax, bins: evaluation.ReliabilityBins, ece: float) -> None:
  """Accuracy bars, gap bars (accuracy vs confidence) and the diagonal."""
  width = bins.upper - bins.lower
  nonempty = bins.count > 0
  centers = (bins.lower + bins.upper) / 2
  acc = np.where(nonempty, bins.accuracy, 0.0)
  conf = np.where(nonempty, bins.confidence, 0.0)
  ax.bar(centers, acc, width=width, color='tab:blue', edgecolor='black',
         linewidth=0.5, label='Accuracy')
  # Gap from accuracy to mean confidence: above the bar if over-confident.
  ax.bar(centers[nonempty], (conf - acc)[nonempty], bottom=acc[nonempty],
         width=width[nonempty], color='tab:red', alpha=0.35,
         edgecolor='tab:red', hatch='//', linewidth=0.5, label='Gap')
  ax.plot([0, 1], [0, 1], linestyle='--', color='gray', label='Perfect')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_ylabel('Accuracy')
  ax.legend(loc='upper left', title=f'ECE = {ece:.2f}%')


def _draw_counts(ax, bins: evaluation.ReliabilityBins) -> None:
  """Histogram of the confidences: examples per bin, as a share of N."""
  width = bins.upper - bins.lower
  centers = (bins.lower + bins.upper) / 2
  share = bins.count / max(int(bins.count.sum()), 1)
  ax.bar(centers, share, width=width, color='tab:gray', edgecolor='black',
         linewidth=0.5)
  for x, n, s in zip(centers, bins.count, share):
    if n:
      ax.annotate(str(int(n)), (x, s), ha='center', va='bottom', fontsize=7)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, max(float(share.max()) * 1.2, 1e-3))
  ax.set_xlabel('Confidence (max softmax)')
  ax.set_ylabel('Share of examples')


def reliability_diagram(logits, labels, path: str, title: str = '',
                        n_bins: int = 10) -> None:
  """Writes a reliability diagram with a confidence histogram as a PNG.

  Args:
    logits: float [N, C].
    labels: int [N].
    path: the PNG file to write; missing parent folders are created.
    title: figure title; the ECE is added to it.
    n_bins: equal-width confidence bins (as in `evaluation.ece`).
  """
  bins = evaluation.reliability_bins(logits, labels, n_bins)
  ece = evaluation.ece_from_bins(bins)
  fig = Figure(figsize=(5, 6), dpi=100)
  FigureCanvasAgg(fig)
  top, bottom = fig.subplots(2, 1, sharex=True,
                             gridspec_kw={'height_ratios': [3, 1]})
  _draw_reliability(top, bins, ece)
  _draw_counts(bottom, bins)
  heading = f'ECE {ece:.2f}%, N = {int(bins.count.sum())}'
  fig.suptitle(f'{title}\n{heading}' if title else heading)
  fig.tight_layout()
  _save(fig, path)


def _save(fig: Figure, path: str) -> None:
  """The PNG, written all-or-nothing to a local path or an object store (gs://)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  paths.write_bytes_atomic(path, buffer.getvalue())


def combined_reliability(curves, path: str, title: str = '', n_bins: int = 10) -> dict:
  """One reliability curve per method on shared axes (the paper's Figures 4-5).

  Each curve joins (mean confidence, accuracy) of the non-empty confidence bins; the
  dotted diagonal is perfect calibration.

  Args:
    curves: [(label, logits [N, C], labels [N])], one per method.
    path: the PNG file to write.
    title: axes title.
    n_bins: equal-width confidence bins (as `evaluation.ece`).

  Returns:
    {'figure': the matplotlib Figure, 'points': {label: bins plotted},
     'examples': {label: N}}.
  """
  fig = Figure(figsize=(5.5, 5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  ax.plot([0, 1], [0, 1], linestyle=':', color='gray', label='_diagonal')
  points, examples = {}, {}
  for label, logits, labels in curves:
    bins = evaluation.reliability_bins(logits, labels, n_bins)
    keep = bins.count > 0
    ece = evaluation.ece_from_bins(bins)
    ax.plot(bins.confidence[keep], bins.accuracy[keep], marker='o', markersize=3,
            label=f'{label} (ECE {ece:.2f}%)')
    points[label], examples[label] = int(keep.sum()), int(bins.count.sum())
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_xlabel('Confidence')
  ax.set_ylabel('Accuracy')
  ax.set_title(title)
  ax.legend(loc='upper left', fontsize=8)
  fig.tight_layout()
  _save(fig, path)
  return {'figure': fig, 'points': points, 'examples': examples}


def select_classes(labels, num_classes: int, seed: int = 0) -> np.ndarray:
  """`num_classes` of the classes present in `labels`, drawn with `seed`, sorted."""
  present = np.unique(labels)
  if num_classes >= present.size:
    return present
  return np.sort(np.random.default_rng(seed).choice(present, num_classes, replace=False))


def subset_indices(labels, classes, max_per_class: int | None = None) -> np.ndarray:
  """Indices of the examples of `classes`, at most the first `max_per_class` of each."""
  labels = np.asarray(labels)
  picked = [np.flatnonzero(labels == c)[:max_per_class] for c in classes]
  return np.sort(np.concatenate(picked))


def tsne_figure(student_features, superior_features, labels, path: str, title: str = '',
                num_classes: int = 20, max_per_class: int | None = 100,
                perplexity: float = 30.0, seed: int = 0) -> dict:
  """t-SNE of the student's and the superior's penultimate features (paper's Figure 6).

  Both feature sets of a class subset are embedded together (one t-SNE, so the two are
  comparable). Left: the student's points coloured by class. Right: student (red) and
  superior (blue) points.

  Args:
    student_features, superior_features: float [N, D] on the same test examples.
    labels: int [N].
    path: the PNG file to write.
    title: figure title.
    num_classes: size of the class subset (drawn with `seed`).
    max_per_class: examples per class at most (None: all).
    perplexity: t-SNE perplexity (lowered to (n - 1) / 3 for few points).
    seed: class subset and t-SNE seed.

  Returns:
    {'figure', 'classes': the classes plotted, 'points': points per model,
     'embedding': [2 * points, 2] (student rows first)}.
  """
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels)
  classes = select_classes(labels, num_classes, seed)
  idx = subset_indices(labels, classes, max_per_class)
  feats = np.concatenate([np.asarray(student_features)[idx],
                          np.asarray(superior_features)[idx]]).astype(np.float64)
  n = idx.size
  tsne = TSNE(n_components=2, perplexity=min(perplexity, max((2 * n - 1) / 3, 1.0)),
              init='pca', random_state=seed)
  emb = tsne.fit_transform(feats)
  fig = Figure(figsize=(10, 4.8), dpi=100)
  FigureCanvasAgg(fig)
  left, right = fig.subplots(1, 2)
  class_index = np.searchsorted(classes, labels[idx])
  left.scatter(emb[:n, 0], emb[:n, 1], c=class_index, cmap='tab20', s=6,
               vmin=0, vmax=max(len(classes) - 1, 1))
  left.set_title(f'student, {len(classes)} classes')
  right.scatter(emb[n:, 0], emb[n:, 1], color='tab:blue', s=6, label='superior')
  right.scatter(emb[:n, 0], emb[:n, 1], color='tab:red', s=6, label='student')
  right.set_title('student vs superior')
  right.legend(loc='best', fontsize=8)
  for ax in (left, right):
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)
  return {'figure': fig, 'classes': classes, 'points': n, 'embedding': emb}
