"""Model families: found by name (`gpt`, `qlstm`) or by `module.path:Class`.

The model contract (DESIGN.md): a `torch.nn.Module` subclass with
- `config_class`: a dataclass with at least `vocab_size` and `seq_len` fields;
- `__init__(config)`;
- `forward(tokens, state=None) -> (logits, state)`; `state` is None for stateless models and
  is carried across chunks (detached by the caller) for recurrent ones;
- `num_params() -> int` and `flops_per_token(seq_len) -> float` (training FLOPs, for MFU);
- `stateful: bool` class attribute (default False): True asks the harness to feed each batch
  row as one continuous stream and to carry the state between steps;
- optionally, `forward(..., logits_from=k)` returning logits for positions k.. only, which
  sliding-window evaluation uses to skip the output layer where it scores nothing.
Named sizes live in `configs.toml` beside the module that defines the class: one table per
size holding the config fields, with an optional `[SIZE.train]` sub-table of training
defaults (batch size, learning rate, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from languini.errors import UserError
from languini.io import read_toml

BUILTIN = {
    "gpt": "baselines.gpt.model:GPT",
    "qlstm": "baselines.qlstm.model:QLSTM",
}


@dataclass(frozen=True)
class Family:
    name: str
    model_class: type[torch.nn.Module]

    @property
    def config_class(self) -> type:
        return self.model_class.config_class

    @property
    def stateful(self) -> bool:
        return bool(getattr(self.model_class, "stateful", False))

    def sizes(self) -> dict[str, dict[str, Any]]:
        path = Path(inspect.getfile(self.model_class)).with_name("configs.toml")
        return read_toml(path, "Sizes") if path.exists() else {}

    def config(self, name: str, **overrides: Any) -> tuple[Any, dict[str, Any]]:
        """The model config and the training defaults for a named size or a TOML file path."""
        if name.endswith(".toml"):
            table = read_toml(name, "Model config")
        else:
            sizes = self.sizes()
            if name not in sizes:
                known = ", ".join(sizes) or "none"
                raise UserError(f"Unknown config '{name}' for family '{self.name}' (known: {known}).")
            table = dict(sizes[name])
        train = dict(table.pop("train", {}))
        table.update({k: v for k, v in overrides.items() if v is not None})
        return make_dataclass_strict(self.config_class, table, f"{self.name} config '{name}'"), train

    def build(self, config: Any) -> torch.nn.Module:
        return self.model_class(config)


def make_dataclass_strict(cls: type, values: dict[str, Any], what: str) -> Any:
    """Build a dataclass from a mapping; unknown keys are an error, not silently dropped."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(f"Unknown key(s) in {what}: {', '.join(unknown)} (allowed: {', '.join(sorted(fields))}).")
    try:
        return cls(**values)
    except TypeError as e:
        raise UserError(f"Invalid {what}: {e}.") from None


def config_hash(config: Any) -> str:
    """A stable hash of a config dataclass: the certificate and the run must agree on it."""
    blob = json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def config_differences(measured: dict[str, Any] | None, config: Any) -> str:
    """What differs between a certificate's recorded config and `config`, in words
    ("vocab_size 8192 measured vs 2048 here"); the two hashes where the certificate has none."""
    here = dataclasses.asdict(config)
    if not isinstance(measured, dict):
        return f"config hash {config_hash(config)} here; the certificate records no config"
    keys = sorted(set(measured) | set(here))
    return ", ".join(f"{k} {measured.get(k)} measured vs {here.get(k)} here" for k in keys
                     if measured.get(k) != here.get(k)) or "the same fields, hashed differently"


def load_family(name: str) -> Family:
    spec = BUILTIN.get(name, name)
    if ":" not in spec:
        raise UserError(f"Unknown family '{name}' (built in: {', '.join(BUILTIN)}; or give module.path:Class).")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"Cannot import module '{module_name}' for family '{name}': {e}.") from None
    cls = getattr(module, attr, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise UserError(f"'{spec}' is not a torch.nn.Module subclass.")
    if not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        raise UserError(f"'{spec}' has no `config_class` dataclass (see the model contract in the README).")
    return Family(name, cls)
