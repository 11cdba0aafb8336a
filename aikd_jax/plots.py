"""Reliability diagrams, drawn with matplotlib's Agg canvas.

We build a `Figure` and attach a `FigureCanvasAgg` instead of using pyplot, so
that no global backend is set or changed for other users of matplotlib in the
process, and no figure lingers in pyplot's registry.
"""
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from aikd_jax import evaluation


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
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format='png')
