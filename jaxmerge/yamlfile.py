"""Reading the YAML files users write (run configs, merge recipes, task files), with one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from jaxmerge.errors import JaxmergeError, expect


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document of the `what` file at `path` (e.g. "a run config"); refuses a missing file, bytes
    that are not UTF-8, and invalid YAML, naming the file and the first line of the parser's complaint."""
    path = Path(path)
    expect(path.is_file(), f"expected {what} file at {path}, found none")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise JaxmergeError(f"expected valid YAML in {path}, found: {str(e).splitlines()[0]}") from None
