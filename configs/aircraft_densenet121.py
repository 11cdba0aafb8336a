r"""FGVC-Aircraft, DenseNet-121: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/aircraft_densenet121.py \
      --workdir=/tmp/aikd/aircraft_densenet121

Paper: Table 4, column "FGVC Aircraft", DenseNet-121. Top-1 error (mean +- std, 3 runs):
AI-KD 13.84 +- 0.38 % (the student, phase 2); Baseline 17.71 +- 0.17 %
(cross-entropy: our superior, phase 1).
Data: put fgvc-aircraft-2013b.tar.gz (URL in aikd_jax/data/builders/fgvc_aircraft.py) in
~/tensorflow_datasets/downloads/manual/ (or set --config.data.manual_dir); the first run
prepares it, or run `python -m aikd_jax.data.builders fgvc_aircraft` beforehand.
"""
from configs import common


def get_config():
  return common.make('fgvc_aircraft', 'densenet121')
