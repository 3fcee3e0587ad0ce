import numpy as np

from languini.data.loader import TokenStream
from languini.data.streams import StreamBatches


def test_token_stream_reads_across_shards_and_wraps():
    s = TokenStream([np.arange(0, 5, dtype=np.uint16), np.arange(5, 12, dtype=np.uint16)])
    assert len(s) == 12
    assert s.read(3, 4).tolist() == [3, 4, 5, 6]
    assert s.read(10, 5).tolist() == [10, 11, 0, 1, 2]
    assert s.all().tolist() == list(range(12))


def test_stream_batches_are_contiguous_rows_and_pure_in_the_step():
    s = TokenStream([np.arange(1000, dtype=np.uint32)])
    b = StreamBatches(s, batch_size=4, seq_len=8)
    x0, y0 = b.batch(0)
    x1, _ = b.batch(1)
    assert x0.shape == (4, 8) and x0.dtype.is_floating_point is False
    assert x0[:, 0].tolist() == [0, 250, 500, 750]  # row j starts at j·N/B
    assert (y0[:, :-1] == x0[:, 1:]).all()  # targets are inputs shifted by one
    assert (x1[:, 0] == x0[:, -1] + 1).all()  # the next step continues each row
    assert b.batch(1)[0].equal(x1)
    assert b.epochs(125) == 4.0  # 125 steps × 4 rows × 8 tokens over 1000 tokens


def test_documents_carry_their_source_ids(tmp_path):
    import json

    from languini.data.loader import PreparedData
    from languini.data.prepare import prepare

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} " * 5}) + "\n"
                              for i in range(60)))
    prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.8, 0.1, 0.1), progress=False)
    data = PreparedData(tmp_path / "data")
    ids = [i for split in ("train", "validation", "test") for i in data.documents(split).ids]
    assert sorted(ids) == sorted(f"d{i}" for i in range(60))
    docs = data.documents("train")
    assert len(docs.ids) == len(docs.offsets) - 1 == len(docs.domains)


def test_document_ids_are_read_on_demand_and_compare_as_a_list(tmp_path):
    import json

    import pytest

    from languini.data import loader

    ids = ["a", "b\nwith a newline", "ünï", "", "d" * 5000]
    path = tmp_path / "doc_ids.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in ids), encoding="utf-8")
    lazy = loader.DocIds(path)
    assert list(lazy) == ids and lazy == ids and ids == lazy and lazy != ids[:-1]
    assert len(lazy) == 5 and lazy[1] == ids[1] and lazy[-1] == ids[-1] and lazy[np.int64(2)] == "ünï"
    assert lazy[1:4] == ids[1:4] and "_starts" in vars(lazy)  # indexing built the offsets index once
    picked = loader.DocIds(path)
    assert picked.pick([4, 0, 2, 0]) == [ids[4], ids[0], ids[2], ids[0]] and len(picked) == 5 and list(picked) == ids
    assert "_starts" not in vars(picked)  # picking, counting and iterating built no index
    assert picked.pick([]) == [] and lazy.pick([3, 1]) == [ids[3], ids[1]]
    with pytest.raises(IndexError, match="document 5"):
        picked.pick([1, 5])
    (tmp_path / "empty.jsonl").write_text("")
    assert len(loader.DocIds(tmp_path / "empty.jsonl")) == 0 and list(loader.DocIds(tmp_path / "empty.jsonl")) == []


def test_shards_are_hashed_once_per_machine_until_one_changes(tmp_path, monkeypatch):
    import json
    import os

    import pytest

    from languini.data import loader
    from languini.data.prepare import prepare
    from languini.errors import UserError

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(200)))
    prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.8, 0.1, 0.1), shard_tokens=5000, progress=False)
    data = loader.PreparedData(tmp_path / "data")
    assert data.verify_shards("train")  # just written: hashed, and too fresh to be stamped
    assert data.verify_shards("train")
    monkeypatch.setattr(loader, "RACY_NS", 0)
    assert data.verify_shards("train") and not data.verify_shards("train")  # stamped, then trusted
    assert data.verify_shards("train", force=True)
    shard = tmp_path / "data" / data.manifest["splits"]["train"]["shards"][1]["file"]
    before = shard.stat()
    tokens = np.load(shard)
    tokens[7] = (tokens[7] + 1) % 256
    np.save(shard, tokens)  # same size; and the mtime put back: the ctime still tells
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(UserError, match="does not match its checksum"):
        data.verify_shards("train")
    shard.unlink()
    with pytest.raises(UserError, match="is missing"):
        data.verify_shards("train")


def test_document_ids_travel_to_other_processes(tmp_path):
    import pickle

    from languini.data import loader

    path = tmp_path / "doc_ids.jsonl"
    path.write_text('"x"\n"y"\n')
    lazy = loader.DocIds(path)
    assert lazy[1] == "y" and pickle.loads(pickle.dumps(lazy))[0] == "x"
