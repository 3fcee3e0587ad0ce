import numpy as np

from languini.data.loader import StreamBatches, TokenStream


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
