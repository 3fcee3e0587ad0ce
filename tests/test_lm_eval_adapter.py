"""The lm-eval adapter against a trained GPT nano and a qLSTM nano, each checked against the
model computed directly; the generated tasks through lm-eval offline; bits-per-byte agreement
with languini's own scoring."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.evaluate import score_streams, score_windows
from languini.family import load_family
from languini.lm_eval_adapter import LanguiniLM, lm_eval_main, rolling_windows, run_tasks
from languini.run import RunDir

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def qlstm_run(trained, tmp_path_factory):
    """A qLSTM nano run directory on the same data, with seq_len 16 so that short texts span
    several chunks; its weights are 30 AdamW steps from a seeded start, enough to write words."""
    src = RunDir.open(trained["run"]).read_config()
    cfg, _ = load_family("qlstm").config("nano", vocab_size=src.model["vocab_size"], seq_len=16)
    torch.manual_seed(0)
    model = load_family("qlstm").build(cfg)
    tokens = torch.from_numpy(PreparedData(src.data).stream("train").all().astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        batch = torch.stack([tokens[s : s + 65] for s in torch.randint(0, len(tokens) - 65, (16,)).tolist()])
        logits, _ = model(batch[:, :-1])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()
    run = RunDir.create(tmp_path_factory.mktemp("qlstm") / "run", force=False)
    run.write_config(dataclasses.replace(src, family="qlstm", config_name="nano", model=dataclasses.asdict(cfg)))
    run.save_checkpoint({"model": model.state_dict()})
    return run.path


@pytest.fixture(scope="module")
def lms(trained, qlstm_run):
    return {"gpt": LanguiniLM(str(trained["run"]), device="cpu", batch_size=3),
            "qlstm": LanguiniLM(str(qlstm_run), device="cpu", batch_size=3)}


@pytest.fixture(params=["gpt", "qlstm"])
def lm(request, lms):
    return lms[request.param]


def instance(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def direct_logprobs(lm, tokens):
    """log p(tokens[t] | tokens[:t]) for t ≥ 1 from one forward pass over the whole sequence."""
    t = torch.tensor([tokens])
    with torch.no_grad():
        logits, _ = lm.model(t[:, :-1])
    return torch.log_softmax(logits[0].float(), -1).gather(-1, t[0, 1:, None])[:, 0].numpy()


def greedy_tokens(lm, context, n):
    """n tokens of greedy decoding by full forward passes (stopping at end-of-document)."""
    tokens = list(context)
    for _ in range(n):
        with torch.no_grad():
            logits, _ = lm.model(torch.tensor([tokens[-lm.seq_len :] if not lm.stateful else tokens]))
        tokens.append(int(logits[0, -1].argmax()))
        if tokens[-1] == lm.eot_token_id:
            break
    return tokens[len(context) :]


def languini_logprob(lm, tokens):
    """languini.evaluate's scoring of one document on its own: the GPT's windows with the
    adapter's stride, or a single stream with the state carried."""
    if lm.stateful:
        return -score_streams(lm.model, np.asarray(tokens), lm.seq_len, 1, CPU).nll.sum()
    return -score_windows(lm.model, np.asarray(tokens), lm.seq_len, lm.stride, 16, CPU).nll.sum()


def long_text(lm, min_tokens):
    """Test documents, one per line, until the text is at least min_tokens long."""
    from languini.eval_tasks import documents

    text = ""
    for doc in documents(lm.run_model.data, "test"):
        text += doc.text + "\n"
        if len(lm.tok_encode(text)) >= min_tokens:
            return text
    raise AssertionError("the test split is too short")


@pytest.mark.parametrize("n,seq_len,stride", [(10, 16, 4), (17, 16, 4), (100, 16, 4), (100, 16, 16), (101, 8, 3)])
def test_rolling_windows_are_languini_evals_from_the_start_and_keep_context_after(n, seq_len, stride):
    for first in (1, 5, 20, n - 1):
        scored = []
        for start, scored_from, end in rolling_windows(n, seq_len, stride, first):
            assert end - 1 - start <= seq_len
            for t in range(scored_from, end):
                assert t - start >= min(t, seq_len - stride + 1)  # context: all there is, or the stride's
                scored.append(t)
        assert scored == list(range(first, n))


def test_loglikelihood_is_the_sum_of_the_tokens_log_probabilities(lm):
    context, continuation = "The cat sat on a mat.", " Birds sang of rain."
    (logprob, _), = lm.loglikelihood([instance("loglikelihood", context, continuation)])
    whole = lm.tok_encode(context + continuation)
    n_context = len(lm.tok_encode(context))
    assert whole[:n_context] == lm.tok_encode(context)
    assert logprob == pytest.approx(direct_logprobs(lm, whole)[n_context - 1 :].sum(), rel=1e-5)
    # an empty context is the end-of-document token, as a rolling document starts
    (alone, _), = lm.loglikelihood([instance("loglikelihood", "", continuation)])
    rolling, = lm.loglikelihood_rolling([instance("loglikelihood_rolling", continuation)])
    direct = direct_logprobs(lm, [lm.eot_token_id] + lm.tok_encode(continuation)).sum()
    assert alone == pytest.approx(direct, rel=1e-5) and rolling == pytest.approx(direct, rel=1e-5)


def test_is_greedy_exactly_when_greedy_decoding_gives_the_continuation(lm):
    context = lm.tok_encode("The old red barn and")
    greedy = greedy_tokens(lm, context, 6)
    [(logprob, is_greedy)] = lm._loglikelihood_tokens([(("", ""), context, greedy)])
    assert is_greedy and logprob == pytest.approx(direct_logprobs(lm, context + greedy)[len(context) - 1 :].sum(), rel=1e-5)
    for i in range(len(greedy)):
        other = greedy[:i] + [(greedy[i] + 1) % lm.tokenizer.vocab_size] + greedy[i + 1 :]
        assert lm._loglikelihood_tokens([(("", ""), context, other)])[0][1] is False


def test_generate_until_is_greedy_batched_and_stops_at_the_stop_string(lm):
    contexts = ["The cat", "Over hills where quiet rivers meet green fields under a pale", "Dogs ran past the old red"]
    greedy = [lm.tok_decode(greedy_tokens(lm, lm.tok_encode(c), 10)) for c in contexts]
    stops = [text[len(text) // 2 :][:2] for text in (greedy[0], greedy[2])]  # one batch: shared gen_kwargs
    expected = []
    for text in greedy:
        for stop in stops:
            text = text.split(stop)[0]
        expected.append(text)
    assert expected[0] != greedy[0] and expected[2] != greedy[2]
    kwargs = {"until": stops, "max_gen_toks": 10}
    assert lm.generate_until([instance("generate_until", c, kwargs) for c in contexts]) == expected
    # sampling at a vanishing temperature is greedy decoding
    cold = {**kwargs, "do_sample": True, "temperature": 1e-6}
    assert lm.generate_until([instance("generate_until", contexts[1], cold)]) == expected[1:2]
    with pytest.raises(UserError, match="top_p"):
        lm.generate_until([instance("generate_until", "The", {"until": ["."], "top_p": 0.9})])


def test_rolling_loglikelihood_of_a_document_longer_than_seq_len(lm):
    text = long_text(lm, 3 * lm.seq_len)
    tokens = [lm.eot_token_id] + lm.tok_encode(text)
    rolling, = lm.loglikelihood_rolling([instance("loglikelihood_rolling", text)])
    # qLSTM: one pass over the whole document, so the carried state changes nothing
    direct = direct_logprobs(lm, tokens).sum() if lm.stateful else languini_logprob(lm, tokens)
    assert rolling == pytest.approx(direct, rel=1e-5)


def test_gpt_with_stride_seq_len_scores_lm_evals_rolling_windows(trained, lms):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    lm = LanguiniLM(str(trained["run"]), device="cpu", stride=lms["gpt"].seq_len)
    text = long_text(lm, 3 * lm.seq_len)
    expected = 0.0
    for context, target in map(make_disjoint_window, get_rolling_token_windows(
            lm.tok_encode(text), lm.eot_token_id, lm.seq_len, context_len=1)):
        expected += direct_logprobs(lm, context + target)[len(context) - 1 :].sum()
    rolling, = lm.loglikelihood_rolling([instance("loglikelihood_rolling", text)])
    assert rolling == pytest.approx(expected, rel=1e-5)


def test_the_model_is_registered_beside_lm_evals_own():
    from lm_eval.api.registry import get_model

    assert get_model("languini") is LanguiniLM
    assert get_model("dummy").__name__ == "DummyLM"  # lm-eval's own names still resolve


@pytest.fixture(scope="module")
def tasks(trained, tmp_path_factory):
    from languini.eval_tasks import make_tasks

    return make_tasks(trained["data"], tmp_path_factory.mktemp("tasks") / "generated")


def test_simple_evaluate_runs_the_generated_tasks_offline(trained, tasks):
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(tasks.include_path)], include_defaults=False)
    results = lm_eval.simple_evaluate(model="languini", model_args=f"run_dir={trained['run']},device=cpu",
                                      tasks=tasks.names, task_manager=manager, limit=3, log_samples=False)
    rolling, cloze = (results["results"][name] for name in tasks.names)
    assert rolling["bits_per_byte,none"] > 0 and 0 <= cloze["acc,none"] <= 1
    assert results["n-samples"]["languini_cloze"]["effective"] == 3


@pytest.mark.parametrize("family", ["gpt", "qlstm"])
def test_rolling_task_gives_languini_bits_per_byte(family, trained, qlstm_run, tasks, tmp_path):
    """lm-eval's bits-per-byte of the rolling task (its first 12 documents) against
    languini.evaluate's scoring of the same documents, each on its own after an end-of-document
    token (GPT: over the same windows)."""
    run = shutil.copytree(trained["run"] if family == "gpt" else qlstm_run, tmp_path / "run")
    result = run_tasks(run, ["languini_rolling"], limit=12, include_path=[tasks.include_path], device="cpu")
    lm_eval_bpb = result["tasks"]["languini_rolling"]["metrics"]["bits_per_byte,none"]

    lm = LanguiniLM(str(run), device="cpu")
    data = lm.run_model.data
    docs = data.documents("test")
    stream = data.stream("test").all()
    by_id = {doc_id: stream[docs.offsets[i] : docs.offsets[i + 1] - 1] for i, doc_id in enumerate(docs.ids)}
    rows = [json.loads(line) for line in (tasks.include_path / "languini_rolling.jsonl").open()][:12]
    logprob = sum(languini_logprob(lm, np.concatenate([[lm.eot_token_id], by_id[row["id"]]])) for row in rows)
    n_bytes = sum(len(row["text"].encode("utf-8")) for row in rows)
    assert lm_eval_bpb == pytest.approx(-logprob / math.log(2) / n_bytes, rel=1e-3)
    assert result["tasks"]["languini_rolling"]["samples"] == 12
    assert result["tasks"]["languini_rolling"]["model"]["family"] == family


def test_run_tasks_merges_into_lm_eval_json_and_names_unreachable_data(trained, tasks, tmp_path):
    run = shutil.copytree(trained["run"], tmp_path / "run")
    (run / "lm_eval.json").write_text(json.dumps({"schema": 1, "tasks": {"earlier_task": {"metrics": {}}}}))
    result = run_tasks(run, ["languini_cloze"], limit=2, include_path=[tasks.include_path], device="cpu")
    saved = json.loads((run / "lm_eval.json").read_text())
    assert set(saved["tasks"]) == {"earlier_task", "languini_cloze"}
    assert saved["tasks"]["languini_cloze"] == result["tasks"]["languini_cloze"]
    assert result["tasks"]["languini_cloze"]["samples"] == 2 and result["tasks"]["languini_cloze"]["limit"] == 2

    hub = tmp_path / "hub_tasks"
    hub.mkdir()
    (hub / "hub_task.yaml").write_text("task: hub_task\ndataset_path: languini-tests/not-downloaded\n"
                                       "output_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: ''\n"
                                       "doc_to_target: text\n")
    with pytest.raises(UserError, match="hub_task' cannot load its data"):
        run_tasks(run, ["hub_task"], include_path=[hub], device="cpu")
    with pytest.raises(UserError, match="positive number of documents"):
        run_tasks(run, ["languini_cloze"], limit=0)


def test_lm_eval_command_reaches_the_model(trained, tasks, capsys):
    lm_eval_main(["run", "--model", "languini", "--model_args", f"run_dir={trained['run']}", "--device", "cpu",
                  "--tasks", "languini_rolling", "--include_path", str(tasks.include_path), "--limit", "2"])
    assert "bits_per_byte" in capsys.readouterr().out
