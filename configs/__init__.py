"""Search presets: ``base.get_config()`` plus per-variant and per-preset overrides.

Installed as the package ``jaxdarts.configs`` (see pyproject), so presets also work
from a wheel.
"""
