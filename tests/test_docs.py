"""The docs stay in step with the code: every relative link resolves, and the configuration
reference documents exactly the keys of configs/default.py."""
import glob
import os
import re

from aikd_jax import preflight
from configs import default
from tests.runs import ROOT

DOCS = ['README.md', 'launch/README.md'] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def _links(text: str) -> list[str]:
  text = re.sub(r'```.*?```', '', text, flags=re.S)  # code blocks hold no links
  return re.findall(r'\]\(([^)\s]+)\)', text)


def test_every_relative_link_resolves():
  broken = []
  for doc in DOCS:
    with open(os.path.join(ROOT, doc)) as f:
      links = _links(f.read())
    for link in links:
      target = link.split('#')[0]
      if not target or re.match(r'[a-z]+://', target) or target.startswith('mailto:'):
        continue
      if not os.path.exists(os.path.join(ROOT, os.path.dirname(doc), target)):
        broken.append(f'{doc}: {link}')
  assert not broken, broken


def documented_keys(text: str) -> set[str]:
  """Keys named in the first column of the reference's tables: `group.key`, and bare
  names after it in the same cell (`aikd.alpha_ce`, `alpha_p` -> aikd.alpha_p)."""
  keys = set()
  for line in text.splitlines():
    if not line.startswith('| `'):
      continue
    group = None
    for name in re.findall(r'`([^`]+)`', line.split('|')[1]):
      if '.' in name:
        group = name.rsplit('.', 1)[0]
        keys.add(name)
      else:
        keys.add(f'{group}.{name}' if group else name)
  return keys


def test_the_configuration_reference_names_every_key_and_no_other():
  with open(os.path.join(ROOT, 'docs', 'configuration.md')) as f:
    documented = documented_keys(f.read())
  actual = set(preflight.flatten(default.get_config().to_dict()))
  assert sorted(actual - documented) == [], 'keys missing from docs/configuration.md'
  assert sorted(documented - actual) == [], 'docs/configuration.md names keys that do not exist'
