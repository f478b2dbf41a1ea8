"""Which verl this package supports: the range declared in its own metadata (pyproject.toml).

:func:`check_verl_version` is called before the verl glue imports anything from verl, so an
unsupported verl is one clear line naming the supported range, never a half-working registration.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["UnsupportedVerl", "supported_verl", "installed_verl", "check_verl_version", "loads_entry_points"]

FIRST_WITH_ENTRY_POINTS = "0.9.0"  # verl loads the `verl.plugins` entry points from this release on

DISTRIBUTION = "verl-lambda"


class UnsupportedVerl(ImportError):
    """The installed verl is outside the range this package supports."""


def supported_verl() -> str | None:
    """The verl version range of this distribution's requirements (None when it is not installed)."""
    from packaging.requirements import Requirement

    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "verl" and requirement.marker is None:  # lower bound first: >=0.7.1,<0.10
            return ",".join(str(s) for s in sorted(requirement.specifier, key=lambda s: not s.operator.startswith(">")))
    return None


def installed_verl() -> str:
    """The installed verl's version; :class:`UnsupportedVerl` when there is none."""
    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        raise UnsupportedVerl("verl is not installed: pip install verl (verl-lambda needs it)") from None


def check_verl_version(version: str | None = None, supported: str | None = None, who: str = DISTRIBUTION) -> str | None:
    """Return the installed verl version (or ``version``); raise :class:`UnsupportedVerl` (one line)
    outside ``supported`` (default: this distribution's declared range). ``who`` names what refuses."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    version = installed_verl() if version is None else version
    supported = supported_verl() if supported is None else supported
    if supported is None:
        return version
    try:
        ok = Version(version) in SpecifierSet(supported)
    except InvalidVersion:
        ok = False
    if not ok:
        raise UnsupportedVerl(
            f"{who} supports verl{supported}; found verl {version}: install a supported verl "
            f"(pip install 'verl{supported}')"
        )
    return version


def loads_entry_points(version: str | None = None) -> bool:
    """Whether ``import verl`` (the installed one, or ``version``) loads the ``verl.plugins`` entry points."""
    from packaging.version import Version

    return Version(installed_verl() if version is None else version) >= Version(FIRST_WITH_ENTRY_POINTS)
