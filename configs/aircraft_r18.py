r"""FGVC-Aircraft, ResNet-18: 224 px, batch 32, 300 epochs.

  python -m aikd_jax.main --config=configs/aircraft_r18.py \
      --workdir=/tmp/aikd/aircraft_r18

Paper: Table 2, column "FGVC Aircraft", row "ResNet 18". Top-1 error (mean +- std, 3 runs):
AI-KD 15.43 +- 0.15 % (the student, phase 2); Baseline 18.61 +- 1.16 %
(cross-entropy: our superior, phase 1).
Data: put fgvc-aircraft-2013b.tar.gz (URL in aikd_jax/data/builders/fgvc_aircraft.py) in
~/tensorflow_datasets/downloads/manual/ (or set --config.data.manual_dir); the first run
prepares it, or run `python -m aikd_jax.data.builders fgvc_aircraft` beforehand.
"""
from configs import common


def get_config():
  return common.make('fgvc_aircraft', 'resnet18')
