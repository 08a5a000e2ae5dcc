"""Exception types shared by every room of the package; this module imports nothing.

``ConfigError`` is raised wherever a configuration value is wrong — a YAML file, a ``key=value``
override, a task's data path — with a message that names the field (``task.math.path``) and,
where there is one, the file and line.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and what to change."""
