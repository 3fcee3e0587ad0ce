"""A trained languini run as an lm-eval model, registered as "languini".

    import languini.lm_eval_adapter
    lm_eval.simple_evaluate(model="languini", model_args="run_dir=RUN", tasks=[...])

`run_tasks` runs lm-eval tasks on a run and keeps the scores in RUN/lm_eval.json.

Every request becomes one token sequence and the position from which its tokens are scored,
and one function scores those the way `languini eval` scores a split:
- stateless models (GPT) over windows of seq_len, the first from the sequence's start, each
  later one moved by `stride` (default a quarter of seq_len, as `languini eval`) and scoring
  only the tokens not scored before, so every token has at least seq_len − stride tokens of
  context (or all there are); stride = seq_len gives lm-eval's own rolling windows;
- stateful models (qLSTM) over the whole sequence, chunk by chunk, the state carried.
A rolling (perplexity) document is scored separately from the others, after the
end-of-document token, which is how every document but the first starts in training.
lm-eval's conventions hold otherwise: the end-of-document token also stands in for an empty
context, and a context's trailing spaces move to the continuation (`TemplateLM`).

Generation has no KV cache: at each step a stateless model reruns the last seq_len tokens and
a stateful one takes one token more. Rows of a batch move through positions together, a row
generating once its own context is used up, so every row sees exactly its own tokens.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import lm_eval.models  # noqa: F401  lm-eval adds its own models only to an empty registry
import numpy as np
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from languini import device as devices
from languini.errors import UserError
from languini.eval_tasks import TASKS_DIR, default_out_dir
from languini.evaluate import rolling_windows
from languini.io import atomic_write_json, read_json
from languini.run import RunDir, load_run_model
from languini.step import token_nll

RESULTS_FILE = "lm_eval.json"
RESULTS_SCHEMA = 1


@dataclass(frozen=True)
class Sampling:
    """How one generation request decodes, from lm-eval's gen_kwargs (Hugging Face names)."""

    until: tuple[str, ...]
    max_tokens: int
    temperature: float  # 0: greedy

    @classmethod
    def parse(cls, gen_kwargs: dict[str, Any], default_max_tokens: int) -> "Sampling":
        """Greedy unless do_sample is true, as in Hugging Face generate; unknown keys are errors."""
        kw = dict(gen_kwargs)
        until = kw.pop("until", None) or []
        max_tokens = int(kw.pop("max_gen_toks", default_max_tokens))
        do_sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 1.0))
        if kw:
            raise UserError(f"The languini model does not support the generation argument(s) {', '.join(sorted(kw))} "
                            "(it knows until, max_gen_toks, do_sample and temperature).")
        if max_tokens < 0 or temperature < 0:
            raise UserError("max_gen_toks and temperature must not be negative.")
        return cls(tuple([until] if isinstance(until, str) else until), max_tokens, temperature if do_sample else 0.0)


@register_model("languini")
class LanguiniLM(TemplateLM):
    """lm-eval's model interface over a languini run directory (model_args: run_dir=RUN)."""

    def __init__(self, run_dir: str, device: str | None = "auto", batch_size: int | str | None = 16,
                 stride: int | None = None, max_gen_toks: int = 256) -> None:
        super().__init__()
        self.run_model = load_run_model(run_dir, device or "auto")
        self.model, self.seq_len, self._device = self.run_model.model, self.run_model.seq_len, self.run_model.device
        self.stateful = bool(getattr(self.model, "stateful", False))
        self.tokenizer = self.run_model.data.tokenizer
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.stride = _positive_int(max(1, self.seq_len // 4) if stride is None else stride, "stride")
        if self.stride > self.seq_len:
            raise UserError(f"stride {self.stride} is longer than the model's seq_len {self.seq_len}.")
        self.max_gen_toks = max_gen_toks

    # --- lm-eval's interface ------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eod_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), continuation is the greedy one) per request."""
        return self.score([(ctx + cont, len(ctx)) for _, ctx, cont in requests], disable_tqdm)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """Each document's log-likelihood, scored after an end-of-document token."""
        texts = [req.args[0] for req in requests]
        seqs = [([self.prefix_token_id] + self.tok_encode(text), 1) for text in texts]
        return [logprob for logprob, _ in self.score(seqs, disable_tqdm)]

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Batches of requests that share gen_kwargs, longest contexts first (as lm-eval's HF model)."""
        args = [req.args for req in requests]
        contexts = [self.tok_encode(context) or [self.prefix_token_id] for context, _ in args]
        key = [json.dumps(kwargs, sort_keys=True, default=str) for _, kwargs in args]
        order = sorted(range(len(args)), key=lambda i: (key[i], -len(contexts[i])))
        out: list[str] = [""] * len(args)
        batches = [list(b) for _, group in itertools.groupby(order, key=lambda i: key[i])
                   for b in _batches(group, self.batch_size)]
        for batch in tqdm(batches, desc="generate", disable=disable_tqdm, leave=False):
            sampling = Sampling.parse(args[batch[0]][1], self.max_gen_toks)
            for i, text in zip(batch, self.generate([contexts[i] for i in batch], sampling)):
                out[i] = text
        return out

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results."""
        return {"languini_run": str(self.run_model.run.path), "family": self.run_model.family,
                "params": self.model.num_params(), "seq_len": self.seq_len,
                "stride": None if self.stateful else self.stride}

    # --- scoring ------------------------------------------------------------------------

    def score(self, seqs: list[tuple[list[int], int]], disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """For each (tokens, first ≥ 1): Σ log p(tokens[t] | tokens[:t]) over t ≥ first, and
        whether every one of those tokens is the model's top-1 prediction."""
        logprob, greedy = np.zeros(len(seqs)), np.ones(len(seqs), dtype=bool)
        score = self._score_streams if self.stateful else self._score_windows
        for row, lp, ok in score(seqs, disable_tqdm):
            logprob[row] += lp.sum()
            greedy[row] &= bool(ok.all())
        return [(float(lp), bool(ok)) for lp, ok in zip(logprob, greedy)]

    def _score_windows(self, seqs: list[tuple[list[int], int]], disable_tqdm: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(request, log-probs, top-1 flags) of the targets each window scores; windows of
        similar lengths share a batch."""
        jobs = [(row, w) for row, (tokens, first) in enumerate(seqs)
                for w in rolling_windows(len(tokens), self.seq_len, self.stride, first)]
        jobs.sort(key=lambda job: job[1][2] - job[1][0], reverse=True)
        for batch in tqdm(_batches(jobs, self.batch_size), desc="score", disable=disable_tqdm, leave=False):
            x = self._padded([seqs[row][0][start : end - 1] for row, (start, _, end) in batch])
            y = self._padded([seqs[row][0][start + 1 : end] for row, (start, _, end) in batch])
            lp, ok = _target_scores(self._forward(x)[0], y)
            for i, (row, (start, scored_from, end)) in enumerate(batch):
                keep = slice(scored_from - start - 1, end - start - 1)
                yield row, lp[i, keep], ok[i, keep]

    def _score_streams(self, seqs: list[tuple[list[int], int]], disable_tqdm: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The same for a stateful model: each sequence read whole from a fresh state, carried
        chunk to chunk; sequences of similar lengths share a batch, padded after their ends."""
        order = sorted((row for row, (tokens, _) in enumerate(seqs) if len(tokens) > 1),
                       key=lambda row: len(seqs[row][0]), reverse=True)
        for batch in tqdm(_batches(order, self.batch_size), desc="score", disable=disable_tqdm, leave=False):
            x = self._padded([seqs[row][0][:-1] for row in batch])
            y = self._padded([seqs[row][0][1:] for row in batch])
            parts = [_target_scores(logits, y[:, a : a + logits.shape[1]]) for a, logits, _ in self._chunks(x, None)]
            lp, ok = (np.concatenate(arrays, axis=1) for arrays in zip(*parts))
            for i, row in enumerate(batch):
                tokens, first = seqs[row]
                keep = slice(first - 1, len(tokens) - 1)
                yield row, lp[i, keep], ok[i, keep]

    # --- generation ---------------------------------------------------------------------

    def generate(self, contexts: list[list[int]], sampling: Sampling) -> list[str]:
        """One batch: each row continues its context until a stop string, the end-of-document
        token or max_tokens; the text is cut before the first stop string."""
        lengths = [len(c) for c in contexts]
        buf = self._padded(contexts, width=max(lengths) + sampling.max_tokens)
        generated: list[list[int]] = [[] for _ in contexts]
        done = [sampling.max_tokens == 0] * len(contexts)
        first = min(lengths) - 1  # the position whose next token is first wanted
        state = self._prefill(buf[:, :first])
        for p in range(first, max(lengths) - 1 + sampling.max_tokens):
            if all(done):
                break
            logits, state = self._next_logits(buf[:, : p + 1], state)
            picked = _pick(logits, sampling.temperature).tolist()
            for i, token in enumerate(picked):
                if done[i] or p + 1 < lengths[i]:  # finished, or still reading its own context
                    continue
                buf[i, p + 1] = token
                generated[i].append(token)
                done[i] = self._finished(generated[i], sampling)
        return [_cut(self.tok_decode(tokens), sampling.until) for tokens in generated]

    def _finished(self, tokens: list[int], sampling: Sampling) -> bool:
        return (tokens[-1] == self.eot_token_id or len(tokens) >= sampling.max_tokens
                or any(stop in self.tok_decode(tokens) for stop in sampling.until if stop))

    def _prefill(self, x: torch.Tensor) -> Any:
        """A stateful model's state after reading x; stateless models keep none."""
        state = None
        if self.stateful:
            for _, _, state in self._chunks(x, None):
                pass
        return state

    def _next_logits(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Next-token logits after each row of x: a stateful model reads only x's last token
        (its state holds the rest), a stateless one the last seq_len tokens."""
        logits, state = self._forward(x[:, -1:], state) if self.stateful else self._forward(x[:, -self.seq_len :])
        return logits[:, -1], state

    # --- model plumbing -----------------------------------------------------------------

    def _forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        with torch.no_grad(), devices.autocast(self._device):
            return self.model(x.to(self._device), state)

    def _chunks(self, x: torch.Tensor, state: Any) -> Iterator[tuple[int, torch.Tensor, Any]]:
        """Feed x to a stateful model seq_len tokens at a time: (offset, logits, state after)."""
        for a in range(0, x.shape[1], self.seq_len):
            logits, state = self._forward(x[:, a : a + self.seq_len], state)
            yield a, logits, state

    def _padded(self, rows: Sequence[Sequence[int]], width: int | None = None) -> torch.Tensor:
        """Rows left-aligned in one tensor, padded after their ends, where no prediction is read."""
        out = torch.full((len(rows), width or max(map(len, rows))), self.eot_token_id, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        return out


def _batches(items: Sequence[Any] | Iterator[Any], n: int) -> list[list[Any]]:
    """Consecutive groups of n items (the last may be shorter)."""
    items = list(items)
    return [items[i : i + n] for i in range(0, len(items), n)]


def _target_scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability (fp32) of each target and whether it is the top-1 prediction."""
    targets = targets.to(logits.device)
    logprobs = -token_nll(logits, targets)
    return logprobs.double().cpu().numpy(), (logits.argmax(-1) == targets).cpu().numpy()


def _pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits.float() / temperature, dim=-1), 1).squeeze(-1)


def _cut(text: str, until: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string (lm-eval's rule)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def _positive_int(value: int | str, name: str) -> int:
    """lm-eval passes model arguments as given on its command line, possibly as strings."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"{name} must be a positive whole number for the languini model (got {value!r}).")
    return n


# --- running tasks ----------------------------------------------------------------------

def run_tasks(run_dir: str | os.PathLike, tasks: list[str], limit: int | None = None,
              include_path: Sequence[str | os.PathLike] = (), batch_size: int = 16,
              device: str = "auto", stride: int | None = None) -> dict[str, Any]:
    """Run lm-eval tasks on a run; merge their scores into RUN/lm_eval.json and return them.

    Tasks are looked up in eval/tasks, in the tasks made from the run's data (DATA/eval_tasks,
    see `languini.eval_tasks.make_tasks`), in `include_path`, then among lm-eval's own.
    """
    from lm_eval import simple_evaluate

    if limit is not None and limit < 1:  # lm-eval would read a limit below 1 as a fraction
        raise UserError(f"The limit must be a positive number of documents per task (got {limit}).")
    run = RunDir.open(run_dir)
    _offline_without_network()
    paths = [TASKS_DIR, default_out_dir(run.read_config().data), *map(Path, include_path)]
    manager = _task_manager(tasks, [p for p in paths if p.is_dir()])
    loaded = [item for name in tasks for item in _load_task(manager, name)]  # data trouble shows before the model loads
    lm = LanguiniLM(str(run.path), device=device, batch_size=batch_size, stride=stride)
    results = simple_evaluate(model=lm, tasks=loaded, task_manager=manager, limit=limit, log_samples=False)
    new = _json_safe(_task_results(results, lm.get_model_info(), limit))
    path = run.path / RESULTS_FILE
    old = read_json(path, "lm-eval results")["tasks"] if path.exists() else {}
    atomic_write_json(path, {"schema": RESULTS_SCHEMA, "tasks": {**old, **new}})
    return {"schema": RESULTS_SCHEMA, "tasks": new}


def _offline_without_network() -> None:
    """Without a reachable Hub, put huggingface_hub and datasets in offline mode, so that a task
    whose data lives on the Hub fails at once (online they retry five times with back-off)."""
    import datasets.config
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    host = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=3).close()
    except OSError:
        constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True


def _task_results(results: dict[str, Any], model: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """One entry per task (and group) of lm-eval's results: its metrics under lm-eval's names
    ("metric,filter"), how many documents were scored, and what produced them."""
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {name: {"metrics": {k: v for k, v in metrics.items() if "," in k},
                   "samples": results["n-samples"].get(name, {}).get("effective"),
                   "limit": limit,
                   "version": results["versions"].get(name),
                   "metadata": results["configs"].get(name, {}).get("metadata"),
                   "model": model, "date": date, "lm_eval": _lm_eval_version()}
            for name, metrics in results["results"].items()}


def _task_manager(tasks: list[str], paths: list[Path]):
    """A TaskManager that knows `tasks`; lm-eval's ~15,000 own tasks take seconds to index, so
    they are indexed only when a task is not found in `paths`."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=paths, include_defaults=False)
    if all(name in manager.all_tasks for name in tasks):
        return manager
    manager = TaskManager(include_path=paths)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise UserError(f"Unknown lm-eval task(s): {', '.join(unknown)} (languini's own are written by "
                        "`languini data make-tasks DATA`; `lm-eval ls tasks` lists lm-eval's).")
    return manager


def _load_task(manager, name: str) -> list:
    """The task, group or tag `name` with its data loaded; unreachable data is a UserError."""
    try:
        loaded = manager.load([name])
    except OSError as e:  # includes datasets' ConnectionError and DatasetNotFoundError offline
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"lm-eval task '{name}' cannot load its data ({reason}); lm-eval's own tasks fetch "
                        "theirs from the Hugging Face Hub, so they need the network or a filled HF_HOME cache.") from None
    group = loaded.get("groups", {}).get(name)
    return [group] if group is not None else list(loaded["tasks"].values())


def _json_safe(obj: Any) -> Any:
    """lm-eval's results as strict JSON: numpy scalars as numbers, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def lm_eval_main(argv: Sequence[str]) -> None:
    """lm-eval's own command with the "languini" model registered.

    lm-eval 0.4.13 finds a --model only in its registry: it reads no entry points, and task
    folders (--include_path) import their Python only after the model is built. So the model
    is registered by importing this module, then lm-eval's command line runs as usual.
    """
    from lm_eval.__main__ import cli_evaluate

    saved, sys.argv = sys.argv, ["lm-eval", *argv]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
