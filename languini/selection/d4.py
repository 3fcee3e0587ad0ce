"""D4 (Tirumala et al. 2023): SemDeDup, then prototypicality pruning, on document embeddings.

1. embed: each train document is the mean of a model's last hidden states over its first
   seq_len tokens (D4 and SemDeDup embed documents truncated to the model's context). The last
   hidden states are the input of the model's output layer (the last Linear onto the
   vocabulary), caught by a hook, so any family with such a layer serves. Or a locally
   installed sentence-transformers model embeds the decoded text.
2. cluster: spherical k-means (k-means++ seeding, cosine similarity) into K clusters.
3. SemDeDup (Abbas et al. 2023), within each cluster: documents are visited from the least to
   the most prototypical (lowest cosine to the centroid first: of a group of duplicates, the
   one farthest from the centroid stays); a document whose cosine similarity to one already
   kept exceeds 1 − ε is dropped.
4. re-cluster what is left (K clusters again, seed + 1), then prototypicality pruning: every
   cluster gives up the same fraction of its documents, those closest to its centroid, until
   R of the original documents remain (nothing more goes if SemDeDup already went below R).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from languini import device as devices
from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.data.derive import DocTable, texts, write_derived
from languini.mix import Mix, SelectionCost, write_mix
from languini.selection.derive import REPORT_FILE, counts, open_selection, token_shares
from languini.selection.models import (SelectionModel, cost, load_selection_model, selection_table, selection_warnings,
                                      total_cost)

SENTENCE_TRANSFORMERS = "sentence-transformers:"
STAGES = ("semdedup", "prototypicality")
_CHUNK = 1 << 16  # rows of a similarity product at a time


def select_d4(data_dir: str | Path, out: str | Path, *, embedder: str | Path, clusters: int, dedup_eps: float,
              keep: float, seed: int = 0, mix_out: str | Path | None = None, max_epochs: float = 4.0,
              charge_selection: bool = False, batch_size: int = 32, device: str = "auto", progress: bool = True,
              force: bool = False) -> dict[str, Any]:
    """Write to `out` the train documents of `data_dir` that SemDeDup and prototypicality pruning
    keep (`keep` of them at most), and a mix spec for them (`mix_out`, default `OUT.toml`).

    `embedder` is a finished run directory or `sentence-transformers:NAME`. Returns the report,
    also written to `out/selection.json`.
    """
    check_settings(clusters, dedup_eps, keep)
    external = str(embedder).startswith(SENTENCE_TRANSFORMERS)
    if external and charge_selection:
        raise UserError("A sentence-transformers embedder's compute is unknown, so it cannot be charged.")
    parent, out, mix_out, table = open_selection(data_dir, out, mix_out, force, progress)
    dev = devices.resolve(device)
    if clusters > len(table):
        raise UserError(f"{clusters} clusters for {len(table)} train documents: use at most one per document.")
    if external:
        name = str(embedder)[len(SENTENCE_TRANSFORMERS):]
        emb = sentence_embeddings(name, parent, table, batch_size, dev, progress)
        provenance = {"sentence_transformers": name}
        spent = SelectionCost(rule=f"{embedder} was not trained by the harness; its compute is not counted")
        warnings = []
    else:
        model = load_selection_model(embedder, parent, dev)
        emb, forward = run_embeddings(model, parent, table, batch_size, dev, progress)
        provenance = {**model.provenance(), "run": str(model.run)}
        spent = total_cost({"embedder": cost(model.budget, model.result.tokens_trained, forward)})
        warnings = selection_warnings("embedder", model, spent)

    centroids, labels = spherical_kmeans(emb, clusters, seed)
    duplicate_of, similarity = semdedup(emb, labels, centroids, dedup_eps)
    survivors = np.flatnonzero(duplicate_of < 0)
    k2 = min(clusters, len(survivors))
    centroids2, labels2 = spherical_kmeans(emb[survivors], k2, seed + 1)
    target = max(1, math.floor(keep * len(table) + 0.5))
    kept_local, centrality = prototypicality(emb[survivors], labels2, centroids2, target)
    keep_mask = np.zeros(len(table), dtype=bool)
    keep_mask[survivors[kept_local]] = True

    stage = np.full(len(table), -1)
    stage[duplicate_of >= 0] = 0
    stage[survivors[~kept_local]] = 1
    selection = {
        "method": "d4",
        "settings": {"clusters": clusters, "dedup_eps": dedup_eps, "keep": keep,
                     "seeds": {"cluster": seed, "recluster": seed + 1}, "reclusters": k2},
        "embedder": {k: v for k, v in provenance.items() if k != "run"},
        "documents": {"total": len(table), "after_semdedup": int(len(survivors)), "kept": int(keep_mask.sum())},
        "removed_by_stage": stage_counts(table, stage, parent.domains),
        "cost": spent.report(),
        "warnings": warnings,
        "shares": {"before": token_shares(table, np.ones(len(table), bool), parent.domains),
                   "after": token_shares(table, keep_mask, parent.domains)},
    }
    report = {**selection, "embedder": provenance,
              "parent": {"path": str(parent.path), "fingerprint": parent.fingerprint},
              "out": str(out), "mix": str(mix_out), "counts": counts(table, keep_mask, parent.domains),
              "removed": removed(table, parent.domains, stage, labels, duplicate_of, similarity, survivors, labels2,
                                 centrality)}
    manifest = write_derived(parent, table, keep_mask, out, "selection", selection, {REPORT_FILE: report}, progress)
    write_mix(mix_out, Mix(out.name, "natural", max_epochs, str(out), selection_table(
        "d4", parent, spent, charge_selection, embedder=str(provenance.get("run", embedder)), clusters=clusters,
        dedup_eps=dedup_eps, keep=keep, seed=seed, report=str((out / REPORT_FILE).resolve()))))
    return {**report, "fingerprint": manifest.fingerprint}


def check_settings(clusters: int, dedup_eps: float, keep: float) -> None:
    """Refuse settings that cannot mean anything before any reading."""
    if clusters < 1:
        raise UserError(f"The number of clusters must be at least 1, got {clusters}.")
    if not 0 <= dedup_eps < 1:
        raise UserError(f"The SemDeDup epsilon must lie in [0, 1) (duplicates have cosine > 1 - eps), got {dedup_eps}.")
    if not 0 < keep <= 1:
        raise UserError(f"The kept ratio must lie in (0, 1], got {keep}.")


# --- embeddings -------------------------------------------------------------------------


def output_layer(model: torch.nn.Module, vocab_size: int) -> torch.nn.Module:
    """The last Linear onto the vocabulary: its input is the model's last hidden states."""
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == vocab_size]
    if not heads:
        raise UserError(f"The embedder's model has no output layer (a Linear onto its {vocab_size}-token "
                        "vocabulary) whose input would be its last hidden states.")
    return heads[-1]


@torch.no_grad()
def run_embeddings(sel: SelectionModel, data: PreparedData, table: DocTable, batch_size: int, dev: torch.device,
                   progress: bool) -> tuple[np.ndarray, int]:
    """Unit-length mean last hidden states of each document's first seq_len tokens (its end-of-
    document token left out), and the tokens run forward (padding included).

    Documents go in batches of similar length, right-padded: the models are causal, so padding
    after a document does not change its states.
    """
    caught: list[torch.Tensor] = []
    hook = output_layer(sel.model, sel.vocab_size).register_forward_pre_hook(lambda m, args: caught.append(args[0]))
    stream = data.stream("train")
    lengths = np.clip(table.tokens - 1, 1, sel.seq_len)
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    forward = 0
    try:
        for lo in tqdm(range(0, len(order), batch_size), desc="embed", disable=not progress, file=sys.stderr):
            rows = order[lo : lo + batch_size]
            n = lengths[rows]
            x = np.zeros((len(rows), int(n.max())), dtype=np.int64)
            for j, i in enumerate(rows):
                x[j, : n[j]] = stream.read(int(table.offsets[i]), int(n[j]))
            caught.clear()
            with devices.autocast(dev):
                sel.model(torch.from_numpy(x).to(dev))
            hidden = caught[-1].float()
            mask = (torch.arange(x.shape[1], device=dev)[None, :] < torch.from_numpy(n).to(dev)[:, None]).float()
            mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            if out is None:
                out = np.zeros((len(table), mean.shape[1]), dtype=np.float32)
            out[rows] = mean.cpu().numpy()
            forward += x.size
    finally:
        hook.remove()
    return unit(out), forward


def sentence_embeddings(name: str, data: PreparedData, table: DocTable, batch_size: int, dev: torch.device,
                        progress: bool) -> np.ndarray:
    """Unit-length sentence-transformers embeddings of the decoded documents."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("sentence-transformers is not installed (pip install sentence-transformers); or give a "
                        "run directory as the embedder.") from None
    try:
        model = SentenceTransformer(name, device=str(dev))
    except OSError as e:
        raise UserError(f"Could not load the sentence-transformers model '{name}' ({e}).") from None
    emb = model.encode(list(texts(data, "train")), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return unit(np.asarray(emb, dtype=np.float32))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length one (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


# --- clustering and pruning ------------------------------------------------------------


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most similar centroid and that cosine, in chunks of rows."""
    labels = np.empty(len(x), dtype=np.int64)
    best = np.empty(len(x), dtype=x.dtype)
    for lo in range(0, len(x), _CHUNK):
        sims = x[lo : lo + _CHUNK] @ centroids.T
        labels[lo : lo + _CHUNK] = sims.argmax(1)
        best[lo : lo + _CHUNK] = sims.max(1)
    return labels, best


def spherical_kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length centroids and each row's cluster: k-means on the sphere (assign by cosine,
    centroid = normalised mean), seeded by k-means++ on cosine distance, until no row moves.
    An emptied cluster restarts at the row farthest from its own centroid."""
    rng = np.random.default_rng(seed)
    centroids = x[[int(rng.integers(len(x)))]]
    while len(centroids) < k:
        _, sim = nearest(x, centroids)
        weight = np.clip(1 - sim.astype(np.float64), 0, None) ** 2
        pick = rng.choice(len(x), p=weight / weight.sum()) if weight.sum() > 0 else int(rng.integers(len(x)))
        centroids = np.vstack([centroids, x[pick]])
    labels = None
    for _ in range(iterations):
        new, sim = nearest(x, centroids)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, x)
        for c in np.flatnonzero(np.bincount(labels, minlength=k) == 0):
            far = int(np.argmin(sim))
            sums[c], sim[far] = x[far], np.inf
        centroids = unit(sums)
    return centroids, labels


def semdedup(emb: np.ndarray, labels: np.ndarray, centroids: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the row of the kept document it duplicates (-1: kept) and their cosine.

    Within each cluster, least prototypical first, a document is dropped when its cosine to a
    document already kept exceeds 1 − eps.
    """
    duplicate_of = np.full(len(emb), -1, dtype=np.int64)
    similarity = np.full(len(emb), np.nan)
    for c in range(len(centroids)):
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(emb[members] @ centroids[c], kind="stable")]
        alive = np.ones(len(order), dtype=bool)
        for j in range(len(order)):
            if not alive[j]:
                continue
            later = order[j + 1 :]
            sims = emb[later] @ emb[order[j]]
            hit = alive[j + 1 :] & (sims > 1 - eps)
            duplicate_of[later[hit]], similarity[later[hit]] = order[j], sims[hit]
            alive[j + 1 :] &= ~hit
    return duplicate_of, similarity


def quotas(sizes: np.ndarray, target: int) -> np.ndarray:
    """Integers proportional to `sizes` summing to `target` (largest remainders round up)."""
    share = sizes * target / sizes.sum()
    out = np.floor(share).astype(np.int64)
    out[np.argsort(-(share - out), kind="stable")[: target - out.sum()]] += 1
    return out


def prototypicality(emb: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                    target: int) -> tuple[np.ndarray, np.ndarray]:
    """Which rows stay when every cluster keeps its quota of `target` (the same fraction of each),
    the least prototypical ones; and each row's cosine to its centroid."""
    centrality = np.einsum("ij,ij->i", emb, centroids[labels])
    if target >= len(emb):
        return np.ones(len(emb), dtype=bool), centrality
    keep = np.zeros(len(emb), dtype=bool)
    for c, quota in enumerate(quotas(np.bincount(labels, minlength=len(centroids)), target)):
        members = np.flatnonzero(labels == c)
        keep[members[np.argsort(centrality[members], kind="stable")[:quota]]] = True
    return keep, centrality


# --- the report -------------------------------------------------------------------------


def stage_counts(table: DocTable, stage: np.ndarray, domains: list[str]) -> dict[str, dict[str, int]]:
    """Documents and tokens each stage removed, per domain present and in total."""
    out: dict[str, dict[str, int]] = {}
    for name, mask in [*((d, table.domains == i) for i, d in enumerate(domains)), ("total", np.ones(len(table), bool))]:
        if not mask.any():
            continue
        out[name] = {}
        for i, s in enumerate(STAGES):
            hit = mask & (stage == i)
            out[name][f"{s}_documents"], out[name][f"{s}_tokens"] = int(hit.sum()), int(table.tokens[hit].sum())
    return out


def removed(table: DocTable, domains: list[str], stage: np.ndarray, labels: np.ndarray, duplicate_of: np.ndarray,
            similarity: np.ndarray, survivors: np.ndarray, labels2: np.ndarray,
            centrality: np.ndarray) -> list[dict[str, Any]]:
    """Every document removed, with its stage, cluster and the similarity that removed it."""
    where = np.full(len(table), -1)
    where[survivors] = np.arange(len(survivors))
    rows = []
    for i in np.flatnonzero(stage >= 0):
        entry = {"id": table.ids[i], "domain": domains[table.domains[i]], "stage": STAGES[stage[i]]}
        if stage[i] == 0:
            entry.update(cluster=int(labels[i]), duplicate_of=table.ids[duplicate_of[i]],
                         similarity=float(similarity[i]))
        else:
            entry.update(cluster=int(labels2[where[i]]), centroid_similarity=float(centrality[where[i]]))
        rows.append(entry)
    return rows


def describe(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal (the CLI's non-JSON output)."""
    s, docs = report["settings"], report["documents"]
    lines = [
        f"D4: {s['clusters']} clusters, SemDeDup at cosine > {1 - s['dedup_eps']:g}, prototypicality pruning to "
        f"{s['keep']:g}; kept {docs['kept']} of {docs['total']} documents ({docs['after_semdedup']} after SemDeDup)",
        f"selection cost: {SelectionCost.from_dict(report['cost']).text()}",
        f"{'domain':<14}{'docs before':>12}{'semdedup':>10}{'prototyp.':>11}{'after':>8}{'share before':>14}"
        f"{'share after':>13}",
    ]
    for d, c in report["counts"].items():
        st = report["removed_by_stage"][d]
        lines.append(f"{d:<14}{c['documents_before']:>12}{st['semdedup_documents']:>10}"
                     f"{st['prototypicality_documents']:>11}{c['documents_after']:>8}"
                     f"{report['shares']['before'].get(d, 1.0):>14.3f}{report['shares']['after'].get(d, 1.0):>13.3f}")
    lines.append(f"written {report['out']} (fingerprint {report['fingerprint'][:12]}) and mix spec {report['mix']}")
    return "\n".join(lines)
