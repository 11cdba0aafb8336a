"""The paper's numbers (Kim, Suh et al., KBS 2024, Tables 2-8), each under its setting.

A paper table is a `Table`: its name, the metrics it prints, how it marks ranks, and per
(dataset, arch) its rows in the paper's order. A `Row` is a method plus the config
`overrides` that define it (flat keys as in `--config.aikd.omega=0.5`, relative to
`RECIPE`, the same overrides as the presets in configs/sweeps/), its label as printed,
and `numbers`: metric -> (mean, std) in our units: percent for every metric (the paper
prints F1 macro as a fraction; here x 100), std None where the paper prints none (ECE).
Metric names are those of results.json: top1_err, top5_err, f1_macro, ece, ece_ts (ECE
after temperature scaling: the paper's "+ TS" row, AI-KD only, not for ResNet-50).

Table 2 (top-1 error, F1 macro) and Table 3 (top-5 error, ECE) cover the ResNet-18/-50
grid: "ResNet 18/50" are PreAct ResNets on CIFAR-100 and Tiny ImageNet and torchvision
ResNets on the fine-grained datasets (section 5.1). Table 4 covers DenseNet-121 (no TF-FD,
no Zipf's LS). Tables 5-8 are CIFAR-100, ResNet-18, top-1 and top-5 error: the loss
ablations (5), the adversarial weight omega (6), the balancing weights (7) and batch
augmentation (8). Each table keeps the numbers it prints: AI-KD's top-1 std is 0.07 in
Tables 5-8 and 0.10 in Table 2. Table 6 prints omega = 0.75 and omega = 1.0 identically
(20.42 ± 0.04, 5.27 ± 0.29); they are copied as printed. The temperature search (section
5.4) prints no numbers: its rows carry none.

Ranks: Tables 2-6 mark the best (bold) and the second best (underlined) of each column;
Table 7 marks only the best; Table 8 marks nothing.

A few cells are printed ambiguously in the copy we transcribed from; we read them from
the rest of their row and column: Table 2 TF-FD ResNet-50 MIT67 (39.89 ± 0.05), Table 4
PS-KD MIT67 F1 (0.635 ± 0.004), CS-KD MIT67 and FGVC-Aircraft top-5 (16.52 ± 0.80,
4.06 ± 0.11) and ECE (8.74, 3.14).
"""
import dataclasses
from typing import Any, Mapping

# Names as the paper prints them.
METHOD_NAMES = {'baseline': 'Baseline', 'cskd': 'CS-KD', 'tfkd': 'TF-KD', 'pskd': 'PS-KD',
                'tffd': 'TF-FD', 'zipf_ls': "Zipf's LS", 'aikd': 'AI-KD', 'no_adv': 'No Adv',
                'only_progressive': 'Only Progressive', 'only_guide': 'Only Guide'}
DATASET_NAMES = {'cifar100': 'CIFAR-100', 'tiny_imagenet': 'Tiny ImageNet',
                 'cub200': 'CUB-200-2011', 'stanford_dogs': 'Stanford Dogs', 'mit67': 'MIT67',
                 'fgvc_aircraft': 'FGVC Aircraft', 'fashion_mnist': 'Fashion-MNIST'}
ARCH_NAMES = {'preact_resnet18': 'PreAct ResNet-18', 'preact_resnet50': 'PreAct ResNet-50',
              'cifar_densenet121': 'DenseNet-121 (CIFAR)', 'resnet18': 'ResNet-18',
              'resnet50': 'ResNet-50', 'densenet121': 'DenseNet-121'}
# Section 5.1: the coarse (32 px) datasets; the others are fine-grained (224 px).
COARSE = ('cifar100', 'tiny_imagenet')
# The paper's model rows ("ResNet 18", "ResNet 50", "DenseNet-121"): our arch per dataset.
FAMILIES = {'18': ('preact_resnet18', 'resnet18'), '50': ('preact_resnet50', 'resnet50'),
            'densenet': ('cifar_densenet121', 'densenet121')}
FAMILY_NAMES = {'18': 'ResNet-18', '50': 'ResNet-50', 'densenet': 'DenseNet-121'}

# The recipe every row departs from: section 5.2 (training) and AI-KD's weights
# (section 3, Tables 6-7), batch augmentation off. Keys are flat config keys; the batch
# size is per dataset (`recipe`). A run that differs from it in any of these keys is not
# the paper's setting (aikd_jax/report_sections.py).
RECIPE = {
    'num_epochs': 300, 'optim.lr': 0.1, 'optim.momentum': 0.9, 'optim.nesterov': True,
    'optim.weight_decay': 5e-4, 'optim.lr_milestones': (150, 225), 'optim.lr_decay': 0.1,
    'aikd.alpha_ce': 0.6, 'aikd.alpha_g': 0.1, 'aikd.alpha_p': 0.3, 'aikd.omega': 0.1,
    'aikd.tau_p': 1.0, 'aikd.tau_g': 1.0, 'aikd.gp_weight': 10.0, 'aikd.critic_lr': 1e-4,
    'augment.cutout': 0, 'augment.mixup': 0.0, 'augment.cutmix': 0.0,
    'augment.cutmix_prob': 1.0, 'superior_augment': 'none',
}
BATCH_SIZE = {'coarse': 128, 'fine': 32}  # section 5.2


def recipe(dataset: str) -> dict[str, Any]:
  """RECIPE with the batch size of `dataset`; {} for a dataset the paper does not train."""
  if dataset not in DATASETS:
    return {}
  return {**RECIPE, 'batch_size': BATCH_SIZE['coarse' if dataset in COARSE else 'fine']}


@dataclasses.dataclass(frozen=True)
class Row:
  """One printed row: a method under `overrides` (flat config keys), and its numbers."""
  method: str
  label: str
  numbers: Mapping[str, tuple[float, float | None]]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def setting(self, dataset: str) -> tuple:
    """The keys where this row departs from the recipe, sorted: what identifies its runs."""
    base = recipe(dataset)
    return tuple(sorted((k, v) for k, v in self.overrides.items() if base.get(k) != v))


@dataclasses.dataclass(frozen=True)
class Table:
  """One paper table: (dataset, arch) -> rows in the paper's order."""
  name: str
  title: str
  metrics: tuple[str, ...]
  marks: int  # ranks marked per column: 2 bold and underlined, 1 bold only, 0 none
  rows: Mapping[tuple[str, str], tuple[Row, ...]]


DATASETS = ('cifar100', 'tiny_imagenet', 'cub200', 'stanford_dogs', 'mit67', 'fgvc_aircraft')

# Each string: the six datasets above, in order; 'mean±std' or 'mean' (no std printed).
_TABLE_2_3 = {
    18: {
        'top1_err': {
            'baseline': '23.97±0.29 46.28±0.19 36.65±0.87 32.61±0.55 39.90±0.16 18.61±1.16',
            'cskd': '21.67±0.25 41.68±0.15 33.93±0.29 30.87±0.05 41.42±0.45 19.66±0.02',
            'tfkd': '22.07±0.38 43.66±0.08 35.92±0.58 31.25±0.27 38.08±0.55 19.27±0.49',
            'pskd': '21.16±0.22 43.45±0.28 34.01±0.74 29.20±0.23 37.55±0.61 16.80±0.18',
            'tffd': '23.77±0.09 45.95±0.17 34.62±0.63 33.09±0.11 38.06±0.63 16.65±0.08',
            'zipf_ls': '22.17±0.28 42.21±0.12 37.12±0.71 34.68±0.20 42.62±0.51 21.34±0.36',
            'aikd': '19.87±0.10 41.84±0.10 29.59±0.27 28.61±0.21 36.84±0.34 15.43±0.15',
        },
        'f1_macro': {
            'baseline': '0.759±0.003 0.536±0.002 0.631±0.008 0.663±0.006 0.598±0.004 0.821±0.002',
            'cskd': '0.781±0.002 0.581±0.002 0.651±0.005 0.681±0.001 0.583±0.002 0.804±0.000',
            'tfkd': '0.779±0.004 0.563±0.001 0.638±0.006 0.678±0.003 0.621±0.007 0.807±0.005',
            'pskd': '0.788±0.002 0.560±0.003 0.657±0.007 0.697±0.002 0.623±0.004 0.831±0.002',
            'tffd': '0.764±0.009 0.541±0.003 0.652±0.006 0.658±0.004 0.616±0.007 0.834±0.001',
            'zipf_ls': '0.776±0.005 0.575±0.003 0.619±0.004 0.652±0.004 0.571±0.006 0.782±0.001',
            'aikd': '0.801±0.001 0.581±0.002 0.701±0.003 0.703±0.002 0.624±0.004 0.845±0.001',
        },
        'top5_err': {
            'baseline': '6.80±0.02 22.61±0.20 15.33±0.27 9.67±0.53 16.19±0.27 4.94±0.23',
            'cskd': '5.63±0.15 19.42±0.12 13.74±0.05 8.52±0.04 16.97±0.44 4.34±0.26',
            'tfkd': '5.61±0.07 21.17±0.30 14.09±0.25 8.78±0.32 15.57±0.56 4.74±0.13',
            'pskd': '5.29±0.12 20.53±0.22 13.67±0.53 7.90±0.19 14.35±0.86 3.89±0.14',
            'tffd': '6.45±0.40 22.67±0.25 13.45±0.62 9.91±0.09 14.89±0.16 4.38±0.21',
            'zipf_ls': '6.88±0.28 22.41±0.25 16.12±0.97 10.17±0.87 18.22±0.26 5.72±0.35',
            'aikd': '4.81±0.04 19.87±0.21 11.47±0.23 8.17±0.06 15.55±0.37 4.06±0.15',
        },
        'ece': {
            'baseline': '11.90 10.51 7.18 7.64 12.80 3.98',
            'cskd': '5.50 3.73 15.45 9.75 15.58 6.24',
            'tfkd': '11.03 10.64 8.01 8.13 12.82 4.97',
            'pskd': '1.37 21.41 24.88 30.05 20.44 24.45',
            'tffd': '11.41 10.89 5.45 7.32 10.31 3.30',
            'zipf_ls': '21.04 13.57 13.16 5.77 8.81 8.55',
            'aikd': '14.10 15.00 26.43 20.41 20.29 18.74',
        },
        'ece_ts': {'aikd': '2.95 1.63 2.80 3.39 4.80 1.89'},
    },
    50: {
        'top1_err': {
            'baseline': '21.57±0.32 41.73±0.12 37.53±1.28 32.84±0.42 38.83±0.15 17.94±1.18',
            'cskd': '21.33±0.13 39.17±0.41 40.26±0.25 35.19±1.81 47.80±0.58 26.57±1.97',
            'tfkd': '20.07±0.22 39.69±0.35 37.02±2.88 28.71±0.42 36.60±0.26 16.12±0.61',
            'pskd': '19.93±0.88 39.08±0.15 39.35±1.90 29.14±1.95 39.74±0.79 19.41±1.25',
            'tffd': '20.69±0.12 39.81±0.47 38.16±0.56 32.04±0.11 39.89±0.05 18.24±1.18',
            'zipf_ls': '21.89±0.12 39.70±0.53 43.71±0.34 37.52±1.73 49.39±0.37 27.12±1.52',
            'aikd': '19.42±0.59 38.79±0.02 32.68±0.33 29.11±0.08 36.42±0.87 13.79±0.44',
        },
        'f1_macro': {
            'baseline': '0.784±0.003 0.582±0.001 0.624±0.011 0.662±0.003 0.609±0.001 0.821±0.012',
            'cskd': '0.787±0.001 0.607±0.004 0.595±0.003 0.635±0.011 0.520±0.004 0.734±0.009',
            'tfkd': '0.798±0.002 0.599±0.001 0.626±0.030 0.708±0.004 0.629±0.004 0.839±0.006',
            'pskd': '0.797±0.010 0.606±0.001 0.603±0.019 0.698±0.020 0.598±0.007 0.805±0.013',
            'tffd': '0.793±0.002 0.601±0.005 0.616±0.006 0.670±0.001 0.595±0.002 0.826±0.022',
            'zipf_ls': '0.780±0.001 0.601±0.005 0.580±0.004 0.611±0.020 0.507±0.001 0.730±0.018',
            'aikd': '0.806±0.006 0.612±0.001 0.671±0.003 0.699±0.001 0.632±0.010 0.862±0.004',
        },
        'top5_err': {
            'baseline': '5.55±0.26 19.66±0.07 14.75±0.09 8.77±0.53 13.51±0.84 3.99±0.46',
            'cskd': '5.79±0.19 17.96±0.51 16.94±0.23 10.76±0.64 19.86±0.74 5.85±0.36',
            'tfkd': '4.31±0.19 18.64±0.27 13.90±1.52 6.07±0.26 11.87±0.63 3.35±0.25',
            'pskd': '4.73±0.25 18.05±0.17 16.96±0.13 7.33±0.58 15.01±0.74 3.97±0.44',
            'tffd': '5.25±0.26 18.02±0.10 15.66±0.12 8.22±0.28 14.63±0.73 4.31±0.14',
            'zipf_ls': '6.77±0.05 20.65±0.07 18.38±0.06 12.68±1.21 21.27±1.12 8.04±1.30',
            'aikd': '4.58±0.33 17.95±0.38 12.14±0.37 6.58±0.09 13.06±0.52 3.20±0.29',
        },
        'ece': {
            'baseline': '9.74 9.15 5.93 7.58 8.92 2.28',
            'cskd': '9.53 2.96 9.75 8.30 10.73 8.60',
            'tfkd': '15.92 11.27 9.75 9.66 7.93 2.41',
            'pskd': '4.83 26.41 21.39 22.34 14.03 26.69',
            'tffd': '9.72 8.87 7.69 6.34 8.97 1.65',
            'zipf_ls': '16.24 12.60 10.01 5.80 6.65 12.15',
            'aikd': '11.86 17.31 22.48 18.39 17.04 17.75',
        },
    },
}

_TABLE_4 = {
    'top1_err': {
        'baseline': '19.71±0.37 40.38±0.14 34.69±0.09 33.19±0.80 37.59±0.62 17.71±0.17',
        'cskd': '21.48±0.32 38.21±0.17 30.93±0.82 28.70±0.14 41.02±1.28 17.37±0.36',
        'tfkd': '18.90±0.22 38.46±0.36 32.95±0.65 30.41±0.29 36.42±0.66 16.71±0.40',
        'pskd': '18.69±0.12 38.62±0.44 34.28±0.50 30.54±0.03 35.92±0.48 16.38±0.71',
        'aikd': '18.35±0.18 38.33±0.07 26.65±0.29 27.13±0.16 34.58±0.75 13.84±0.38',
    },
    'f1_macro': {
        'baseline': '0.802±0.004 0.594±0.001 0.650±0.007 0.656±0.007 0.620±0.008 0.824±0.002',
        'cskd': '0.784±0.005 0.616±0.001 0.689±0.007 0.703±0.002 0.588±0.014 0.826±0.005',
        'tfkd': '0.811±0.002 0.617±0.002 0.668±0.007 0.686±0.004 0.633±0.006 0.833±0.005',
        'pskd': '0.813±0.001 0.609±0.005 0.655±0.005 0.681±0.001 0.635±0.004 0.835±0.008',
        'aikd': '0.816±0.002 0.617±0.002 0.730±0.004 0.714±0.006 0.649±0.008 0.861±0.004',
    },
    'top5_err': {
        'baseline': '4.77±0.15 17.73±0.19 12.94±0.47 8.56±0.50 14.75±0.78 4.31±0.18',
        'cskd': '6.67±0.08 16.82±0.21 11.36±0.38 7.23±0.19 16.52±0.80 4.06±0.11',
        'tfkd': '4.20±0.07 16.32±0.40 11.98±0.11 7.20±0.30 12.61±0.27 3.74±0.17',
        'pskd': '4.06±0.11 17.01±0.30 13.18±0.34 7.76±0.15 13.18±0.34 3.59±0.08',
        'aikd': '4.14±0.06 16.50±0.44 9.46±0.14 6.34±0.13 12.44±0.82 3.53±0.09',
    },
    'ece': {
        'baseline': '7.74 4.60 5.06 4.69 9.63 2.38',
        'cskd': '14.66 2.14 7.27 2.83 8.74 3.14',
        'tfkd': '9.87 5.81 4.18 4.48 10.64 2.75',
        'pskd': '1.34 24.16 26.57 33.64 20.56 27.80',
        'aikd': '5.11 1.89 26.66 20.14 19.26 18.20',
    },
    'ece_ts': {'aikd': '1.70 1.67 1.99 1.73 4.06 1.46'},
}

def _parse_cell(text: str, scale: float) -> tuple[float, float | None]:
  mean, _, std = text.partition('±')
  return (round(float(mean) * scale, 4), round(float(std) * scale, 4) if std else None)


_CIFAR_R18 = ('cifar100', 'preact_resnet18')
_TOP = ('top1_err', 'top5_err')


def _n(top1: str, top5: str) -> dict:
  return {'top1_err': _parse_cell(top1, 1.0), 'top5_err': _parse_cell(top5, 1.0)}


_AIKD_5_8 = _n('19.87±0.07', '4.81±0.04')  # AI-KD in Tables 5-8 (Table 2: std 0.10)

TABLE_5 = (
    Row('aikd', 'AI-KD', _AIKD_5_8),
    Row('no_adv', 'No Adv', _n('20.34±0.28', '4.86±0.10')),
    Row('only_progressive', 'Only Progressive', _n('21.26±0.06', '5.66±0.06')),
    Row('only_guide', 'Only Guide', _n('22.17±0.05', '6.21±0.22')),
    Row('baseline', 'Baseline', _n('23.97±0.29', '6.80±0.02')),
)
# omega -> (top-1, top-5); 0.75 and 1.0 as printed (identical in the paper).
_TABLE_6 = {0.0: ('20.34±0.28', '4.86±0.10'), 0.01: ('19.91±0.17', '4.82±0.14'),
            0.05: ('19.97±0.22', '4.85±0.25'), 0.1: ('19.87±0.07', '4.81±0.04'),
            0.25: ('19.97±0.09', '4.89±0.09'), 0.5: ('20.17±0.12', '4.90±0.22'),
            0.75: ('20.42±0.04', '5.27±0.29'), 1.0: ('20.42±0.04', '5.27±0.29')}
TABLE_6 = tuple(Row('aikd', f'ω = {w:g}', _n(*cells), {'aikd.omega': w})
                for w, cells in _TABLE_6.items())
# (alpha_ce, alpha_g, alpha_p) -> (top-1, top-5), in the paper's order.
_TABLE_7 = {(0.6, 0.1, 0.3): ('19.87±0.07', '4.81±0.04'),
            (0.6, 0.2, 0.2): ('21.29±0.12', '5.46±0.09'),
            (0.6, 0.3, 0.1): ('22.05±0.17', '5.62±0.11'),
            (0.7, 0.1, 0.2): ('20.98±0.09', '5.24±0.12'),
            (0.7, 0.2, 0.1): ('21.79±0.13', '5.48±0.07'),
            (0.8, 0.1, 0.1): ('21.46±0.11', '5.16±0.20')}
TABLE_7 = tuple(
    Row('aikd', f'(α_CE, α_G, α_P) = ({ce:g}, {g:g}, {p:g})', _n(*cells),
        {'aikd.alpha_ce': ce, 'aikd.alpha_g': g, 'aikd.alpha_p': p})
    for (ce, g, p), cells in _TABLE_7.items())
# The augmentation settings are the augmentation papers' CIFAR ones (docs/methods.md).
TABLE_8 = (
    Row('aikd', 'AI-KD', _AIKD_5_8),
    Row('aikd', '+ Cutout', _n('19.75±0.29', '4.90±0.01'), {'augment.cutout': 8}),
    Row('aikd', '+ Mixup', _n('19.29±0.16', '4.70±0.12'), {'augment.mixup': 1.0}),
    Row('aikd', '+ CutMix', _n('18.97±0.25', '4.32±0.10'),
        {'augment.cutmix': 1.0, 'augment.cutmix_prob': 0.5}),
)
TAUS = (1.0, 2.0, 4.0)
TAU_SEARCH = tuple(Row('aikd', f'τ_P = {p:g}, τ_G = {g:g}', {},
                       {'aikd.tau_p': p, 'aikd.tau_g': g}) for p in TAUS for g in TAUS)


def arch_of(dataset: str, family: str) -> str:
  """Our arch of the paper's model row `family` ('18', '50', 'densenet') on `dataset`."""
  coarse, fine = FAMILIES[family]
  return coarse if dataset in COARSE else fine


def family_of(arch: str) -> str | None:
  return next((f for f, archs in FAMILIES.items() if arch in archs), None)


def _grid(table: dict, family: str) -> dict:
  """(dataset, arch) -> rows (one per method, Table 2's order) of a Tables 2-4 block."""
  numbers = {}
  for metric, rows in table.items():
    scale = 100.0 if metric == 'f1_macro' else 1.0
    for method, cells in rows.items():
      for dataset, cell in zip(DATASETS, cells.split(), strict=True):
        numbers.setdefault((dataset, method), {})[metric] = _parse_cell(cell, scale)
  out = {}
  for (dataset, method), cells in numbers.items():
    out.setdefault((dataset, arch_of(dataset, family)), []).append(
        Row(method, METHOD_NAMES[method], cells))
  return {key: tuple(rows) for key, rows in out.items()}


_METRICS_2_4 = ('top1_err', 'f1_macro', 'top5_err', 'ece', 'ece_ts')
TABLES = (
    Table('Tables 2, 3', 'Comparison with self-KD methods, ResNet-18 and ResNet-50',
          _METRICS_2_4, 2, {**_grid(_TABLE_2_3[18], '18'), **_grid(_TABLE_2_3[50], '50')}),
    Table('Table 4', 'Comparison with self-KD methods, DenseNet-121', _METRICS_2_4, 2,
          _grid(_TABLE_4, 'densenet')),
    Table('Table 5', 'Loss ablation', _TOP, 2, {_CIFAR_R18: TABLE_5}),
    Table('Table 6', 'Adversarial weight ω', _TOP, 2, {_CIFAR_R18: TABLE_6}),
    Table('Table 7', 'Balancing weights (α_CE, α_G, α_P)', _TOP, 1, {_CIFAR_R18: TABLE_7}),
    Table('Table 8', 'Batch augmentation', _TOP, 0, {_CIFAR_R18: TABLE_8}),
    Table('τ search', 'Temperatures τ_P, τ_G (section 5.4; the paper prints no numbers)',
          _TOP, 2, {_CIFAR_R18: TAU_SEARCH}),
)


def table(name: str) -> Table:
  return next(t for t in TABLES if t.name == name)


def lookup(dataset: str, arch: str, method: str, table_name: str | None = None) -> Row | None:
  """The paper's row of `method` in its recipe setting (Tables 2-5; or in `table_name`)."""
  for t in TABLES:
    if table_name in (None, t.name):
      for row in t.rows.get((dataset, arch), ()):
        if row.method == method and not row.setting(dataset):
          return row
  return None
