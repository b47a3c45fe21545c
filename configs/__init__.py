"""Every command's config as data: ``search.py``, ``score.py`` (``pretrain.py``,
``train.py``) hold a base config, presets, the schema of every key and the rules that
tie keys together; ``common.py`` holds what they share (the quick size).
:mod:`jaxdarts.config` builds and validates them.

Installed as the package ``jaxdarts.configs`` (see pyproject), so presets also work
from a wheel.
"""
