"""Mix specs written by the selection commands.

A selection ends in a mix spec (the TOML `--mix` and `languini mix compare` read) whose
`[selection]` table holds the provenance: the method, its settings, the tokenizer it was
selected with, and its cost (`selection_hours`, `selection_flops`). The two rules that travel
with it (no transfer across tokenizers; a charged cost comes out of the budget) are the
mix's own: `Mix.check_tokenizer`, `Mix.charge`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.io import atomic_write_text
from languini.mixes import Mix

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(v: Any) -> str:
    """A TOML scalar or array of scalars (JSON string escapes are TOML's too)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def toml_table(table: dict[str, Any], name: str = "") -> str:
    """Scalars first, then each nested table under its dotted name; None is left out (TOML has
    no null: a missing key reads back as None)."""
    lines = [f"[{name}]"] if name else []
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None and not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines.append("\n" + toml_table(v, f"{name}.{toml_key(k)}" if name else toml_key(k)).rstrip("\n"))
    return "\n".join(lines) + "\n"


def write_mix_spec(path: Path, mix: Mix) -> None:
    """The mix as the TOML `load_mix` reads back; `data` is written relative to the spec's folder
    (where `load_mix` resolves it), so spec and data can move together."""
    data = os.path.relpath(Path(mix.data).resolve(), path.resolve().parent) if mix.data else None
    atomic_write_text(path, toml_table({"name": mix.name, "data": data, "max_epochs": mix.max_epochs,
                                        "weights": mix.weights, "selection": mix.selection}))


def check_spec_out(path: Path, force: bool) -> None:
    """A spec is a user's file once written: replace it only when asked."""
    if path.suffix != ".toml":
        raise UserError(f"The mix spec {path} must end in .toml.")
    if path.exists() and not force:
        raise UserError(f"The mix spec {path} already exists; pass --force to replace it or choose another path.")


def selection_table(method: str, data: PreparedData, cost: dict[str, Any], charge: bool,
                    **provenance: Any) -> dict[str, Any]:
    """The `[selection]` table every method writes: method, tokenizer, source data, its
    settings and provenance, and the cost with whether it is charged."""
    if charge and cost["selection_hours"] is None and cost["selection_flops"] is None:
        raise UserError("The selection's cost is unknown (e.g. an external embedder), so it cannot be charged.")
    return {"method": method, "tokenizer_sha256": data.manifest["tokenizer"]["sha256"],
            "source_fingerprint": data.fingerprint, **provenance,
            "selection_hours": cost["selection_hours"], "selection_reference": cost["selection_reference"],
            "selection_flops": cost["selection_flops"], "charge": charge}
