"""The ``targets.yaml`` format: several source/destination pairs copied at once.

```yaml
targets:
  - source: /data/acq1.zarr
    destination: /mnt/cluster/acq1.zarr
  - source: /data/acq2.zarr
    destination: /mnt/cluster/acq2.zarr
    move: true   # free this acquisition's disk once its copy is verified (docs/move.md)
```

``move`` (optional, true or false) overrides the command line's ``--move`` for that entry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .checks import InputError, check_not_url
from .destinations.s3_settings import is_s3_url

#: The options an entry may set for itself, and their type.
ENTRY_OPTIONS = {"move": bool}


def read_targets(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse a targets file into ``(source, destination)`` pairs (`read_targets_with_options`
    without the entries' own options)."""
    return [(source, destination) for source, destination, _ in read_targets_with_options(path)]


def read_targets_with_options(path: str | os.PathLike) -> list[tuple[str, str, dict[str, Any]]]:
    """Parse a targets file into ``(source, destination, options)``: ``options`` holds what
    the entry sets for itself (`ENTRY_OPTIONS`), to override the command line's.

    Raises
    ------
    InputError
        Missing or malformed file, or a bad entry (named by its number); two entries that
        write into the same destination.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"targets file {path} does not exist; check the path") from None
    except (OSError, yaml.YAMLError) as exc:
        line = str(exc).replace("\n", " ")
        raise InputError(f"targets file {path} is not valid YAML ({line}); fix it") from None
    fix = "expected `targets:` with a list of `source:`/`destination:` entries"
    if not isinstance(data, dict) or not isinstance(data.get("targets"), list):
        raise InputError(f"targets file {path} has no `targets` list; {fix}")
    if not data["targets"]:
        raise InputError(f"targets file {path} lists no targets; {fix}")
    pairs: list[tuple[str, str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(data["targets"], start=1):
        where = f"targets file {path}, entry {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} is not a `source`/`destination` map; {fix}")
        unknown = set(entry) - {"source", "destination", *ENTRY_OPTIONS}
        if unknown:
            raise InputError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}; {fix}")
        source, destination = entry.get("source"), entry.get("destination")
        if not isinstance(source, str) or not source:
            raise InputError(f"{where} has no `source` path; {fix}")
        if not isinstance(destination, str) or not destination:
            raise InputError(f"{where} has no `destination` path; {fix}")
        try:  # (before the paths are joined to the file's folder: a URL is not a path)
            check_not_url(source, "source")
            check_not_url(destination, "destination")
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        own = {key: entry[key] for key in ENTRY_OPTIONS if key in entry}
        for key, value in own.items():
            if not isinstance(value, ENTRY_OPTIONS[key]):
                raise InputError(f"{where} has `{key}: {value}`; write `{key}: true` or false")
        base = path.parent
        source = os.fspath(base / os.path.expanduser(source))
        if not is_s3_url(destination):  # (an s3:// URL is not a path)
            destination = os.fspath(base / os.path.expanduser(destination))
        real = os.path.realpath(destination)
        if real in seen:
            raise InputError(
                f"{where} writes into {destination} like entry {seen[real]}; "
                "give every target its own destination"
            )
        seen[real] = number
        pairs.append((source, destination, own))
    return pairs
