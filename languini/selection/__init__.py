"""Model-based data selection: each method turns a prepared dataset into a mix spec that
`languini mix compare` trains at equal compute against the others.

- `perplexity.select_perplexity`: perplexity pruning with a small reference model (Ankner et al. 2024);
- `d4.select_d4`: SemDeDup and prototypicality pruning on document embeddings (Tirumala et al. 2023);
- `doremi.doremi`: domain weights from a group-DRO proxy model (Xie et al. 2023).

The first two write a derived dataset (`derive`); all three write a mix spec whose `[selection]`
table records the provenance and the selection models' cost (`models`; the spec itself is `languini.mix`).
"""
