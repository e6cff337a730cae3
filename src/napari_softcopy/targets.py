"""The ``targets.yaml`` format: several source/destination pairs copied at once.

```yaml
targets:
  - source: /data/acq1.zarr
    destination: /mnt/cluster/acq1.zarr
  - source: /data/acq2.zarr
    destination: /mnt/cluster/acq2.zarr
```
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .checks import InputError


def read_targets(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse a targets file into ``(source, destination)`` pairs.

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
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(data["targets"], start=1):
        where = f"targets file {path}, entry {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} is not a `source`/`destination` map; {fix}")
        unknown = set(entry) - {"source", "destination"}
        if unknown:
            raise InputError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}; {fix}")
        source, destination = entry.get("source"), entry.get("destination")
        if not isinstance(source, str) or not source:
            raise InputError(f"{where} has no `source` path; {fix}")
        if not isinstance(destination, str) or not destination:
            raise InputError(f"{where} has no `destination` path; {fix}")
        base = path.parent
        source = os.fspath(base / os.path.expanduser(source))
        if not destination.startswith("s3://"):  # (an s3:// URL is not a path)
            destination = os.fspath(base / os.path.expanduser(destination))
        real = os.path.realpath(destination)
        if real in seen:
            raise InputError(
                f"{where} writes into {destination} like entry {seen[real]}; "
                "give every target its own destination"
            )
        seen[real] = number
        pairs.append((source, destination))
    return pairs
