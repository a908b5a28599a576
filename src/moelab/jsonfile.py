"""Reading moelab's own JSON files so that a damaged one is named, never guessed around.

    summary = read_json(run_dir / "train_summary.json")    # UserError naming the file when damaged
    problem = json_problem(run_dir / "status.json")        # "invalid JSON at line 1" / None (fine or absent)

Every file moelab writes is written atomically, so a damaged file means something outside moelab
changed it (a disk fault, a copy cut short, a hand edit): the message says which file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moelab.errors import UserError


def json_problem(path: str | Path, *, expect: type | None = dict) -> str | None:
    """Why ``path`` cannot be used (None when it is absent or fine)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as err:
        return f"invalid JSON at line {err.lineno} (truncated or edited?)"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if expect is not None and not isinstance(data, expect):
        return f"expected a JSON {'object' if expect is dict else expect.__name__}, got {type(data).__name__}"
    return None


def read_json(path: str | Path, *, expect: type | None = dict, fix: str = "") -> Any:
    """The parsed content of ``path``; a missing or damaged file is a one-line ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing" + (f"; {fix}" if fix else ""))
    problem = json_problem(path, expect=expect)
    if problem:
        raise UserError(f"{path}: damaged: {problem}" + (f"; {fix}" if fix else ""))
    return json.loads(path.read_text(encoding="utf-8"))
