"""Fast mode chooses by measurement (issue 17): timings -> choice, the measuring loop, and the
choice recorded in the report signature and in `emopres models check --fast`.

No test times anything: the timer is replaced by one that charges each mode a fixed cost, so the
choice under test is known in advance."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from models.runtime import precision as P

pytest.importorskip("transformers")
pytest.importorskip("funasr")

from tests import paper_fixtures as fx  # noqa: E402


def test_choice_from_timings():
    assert P.choose_precision(1.0, 0.4).mode == "bf16"
    assert P.choose_precision(1.0, 0.4).reason == "bf16-faster"
    slower = P.choose_precision(1.0, 1.7)
    assert (slower.mode, slower.reason) == ("fp32", "bf16-slower")
    assert slower.speedup == pytest.approx(1 / 1.7)
    # a win inside the noise margin keeps exact fp32: fast mode is never slower than exact mode
    assert P.choose_precision(1.0, 0.95).mode == "fp32"
    assert P.choose_precision(1.0, P.FAST_MARGIN).mode == "bf16"
    with pytest.raises(ValueError):
        P.choose_precision(0.0, 1.0)
    with pytest.raises(ValueError):
        P.choose_precision([1.0, 1.0], [0.5])
    # per round: bf16 must win every round, not only its luckiest one
    assert P.choose_precision([1.0, 1.0], [0.5, 0.6]).mode == "bf16"
    assert P.choose_precision([1.0, 1.0], [0.5, 1.2]).mode == "fp32"
    assert P.choose_precision([1.0, 2.0], [0.5, 0.9]).fp32_seconds == 1.0
    assert "exact fp32 kept" in slower.describe() and "0.59x" in slower.describe()


class FakeModel:
    def __init__(self, device="cpu"):
        self.device = device
        self.precision = "fp32"
        self.calls: list[str] = []

    def run(self, waves):
        self.calls.append(self.precision)
        return waves


@pytest.fixture(autouse=True)
def bf16_cpu(monkeypatch):
    """Every test here but the capability ones times on a CPU that reports bf16 instructions
    (the development machine has none, where fast mode would not time at all)."""
    monkeypatch.setattr(P, "cpu_native_bf16", lambda flags=None: True)


def charge(costs: dict[str, float]):
    """A stand-in for precision._timed: runs the model, returns the mode's fixed cost."""

    def timed(model, run, waves):
        run(waves)
        return costs[model.precision]

    return timed


@pytest.mark.parametrize("costs,expected", [({"fp32": 1.0, "bf16": 0.5}, "bf16"), ({"fp32": 1.0, "bf16": 1.5}, "fp32")])
def test_measuring_sets_the_faster_mode(monkeypatch, costs, expected):
    monkeypatch.setattr(P, "_timed", charge(costs))
    model = FakeModel()
    choice = P.measure_fast_mode(model, model.run, repeats=2)
    assert choice.mode == expected and model.precision == expected
    assert choice.fp32_seconds == costs["fp32"] and choice.bf16_seconds == costs["bf16"]
    assert model.calls.count("fp32") == 3 and model.calls.count("bf16") == 3  # warm-up + 2 alternating each


def test_hopeless_bf16_is_not_timed_again(monkeypatch):
    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": 5.0}))
    model = FakeModel()
    assert P.measure_fast_mode(model, model.run, repeats=3).mode == "fp32"
    assert model.calls == ["fp32", "bf16"]


def test_device_without_bf16_stays_exact(monkeypatch):
    monkeypatch.setattr(P, "bf16_runs_on", lambda device: False)
    model = FakeModel("cuda")
    choice = P.measure_fast_mode(model, model.run)
    assert (choice.mode, choice.reason, model.calls) == ("fp32", "no-bf16", [])


def test_cpu_without_bf16_instructions_stays_exact_untimed(monkeypatch):
    """Where the CPU flags show no AVX512-BF16 / AMX, bf16 is emulated and slower: nothing is timed,
    fp32 is kept, and the reason says why (also where a timing would have favoured bf16)."""
    monkeypatch.setattr(P, "cpu_native_bf16", lambda flags=None: False)
    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": 0.1}))
    model = FakeModel("cpu")
    model.precision = "bf16"
    choice = P.measure_fast_mode(model, model.run)
    assert (choice.mode, choice.reason, model.precision, model.calls) == ("fp32", "no-bf16-cpu", "fp32", [])
    assert "AVX512-BF16 or AMX" in choice.describe() and choice.speedup is None
    # a GPU is judged by its own timing, whatever the CPU
    gpu = FakeModel("cuda")
    monkeypatch.setattr(P, "bf16_runs_on", lambda device: True)
    assert P.measure_fast_mode(gpu, gpu.run).mode == "bf16" and "bf16" in gpu.calls


def test_cpu_capability_from_flags(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real functions, not the fixture's
    genoa = {"avx2", "avx512f", "avx512_bf16"}
    sapphire_rapids = {"avx512f", "amx_bf16", "amx_tile", "avx512_bf16"}
    assert P.cpu_native_bf16(genoa) and P.cpu_native_bf16(sapphire_rapids)
    assert P.cpu_native_bf16({"fp", "asimd", "bf16"})  # Arm (Graviton 3) names it in Features
    assert P.cpu_native_bf16({"avx2", "fma"}) is False  # this machine: Zen 2/3, no AVX-512
    assert P.cpu_native_bf16({"avx512f", "avx512bw", "avx512_vnni"}) is False  # Ice Lake: emulated in oneDNN
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert P._cpuinfo_flags(str(info)) == {"fpu", "avx2", "amx_bf16"}
    assert P._cpuinfo_flags(str(tmp_path / "absent")) is None
    monkeypatch.setattr(P, "_cpuinfo_flags", lambda path="/proc/cpuinfo": None)  # not Linux
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert P.cpu_native_bf16() is False  # no AVX-512 kernels in torch: no bf16 instructions either
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert P.cpu_native_bf16() is None  # unknown: fast mode times both


def test_probe_is_a_job_shaped_batch():
    waves = P.probe_waves()
    assert [len(w) / 16000 for w in waves] == list(P.PROBE_SECONDS)
    assert len(waves) >= 4 and sum(P.PROBE_SECONDS) >= 15  # several utterances: tall GEMMs in a bf16 batch
    assert all(w.dtype.name == "float32" for w in waves)


def test_a_failing_run_leaves_the_model_exact(monkeypatch):
    def broken(model, run, waves):
        if model.precision == "bf16":
            raise RuntimeError("no bf16 kernel")
        return 1.0

    monkeypatch.setattr(P, "_timed", broken)
    model = FakeModel()
    with pytest.raises(RuntimeError):
        P.measure_fast_mode(model, model.run)
    assert model.precision == "fp32"


def test_signature_mode_names_choices_and_reasons():
    faster, slower = P.choose_precision(1.0, 0.4), P.choose_precision(1.0, 2.0)
    assert P.signature_mode({"e2v": None, "va": None}, {"e2v": "fp32", "va": "fp32"}) == "fp32"
    assert P.signature_mode({"e2v": slower, "va": slower}, {"e2v": "fp32", "va": "fp32"}) == "fp32(fast:bf16-slower)"
    assert (
        P.signature_mode({"e2v": faster, "va": slower}, {"e2v": "bf16", "va": "fp32"})
        == "e2v=bf16,va=fp32(fast:bf16-faster+bf16-slower)"
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("paper_models"))


@pytest.fixture
def short_probe(monkeypatch):
    """The timer is fake here: a short probe runs the same code in less time."""
    monkeypatch.setattr(P, "PROBE_SECONDS", (0.6, 0.4))


@pytest.mark.parametrize("bf16_cost,mode", [(0.3, "bf16(fast:bf16-faster)"), (1.8, "fp32(fast:bf16-slower)")])
def test_fast_profile_records_its_choice_in_the_signature(model_dir, short_probe, monkeypatch, bf16_cost, mode):
    from models.paper.profile import PaperProfile

    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": bf16_cost}))
    profile = PaperProfile.from_model_dir(model_dir, fast=True)
    assert profile.signature_parts()[-1] == f"mode:{mode}"
    choices = profile.fast_choices()
    assert set(choices) == {"e2v", "va", "spk", "xlsr"}
    assert all(c["bf16_seconds"] == bf16_cost and c["fp32_seconds"] == 1.0 for c in choices.values())
    exact = PaperProfile.from_model_dir(model_dir)
    assert exact.signature_parts()[-1] == "mode:fp32" and exact.fast_choices() == {}
    # the probe packed weights for both precisions; the chosen one's only are kept
    dtype = torch.bfloat16 if bf16_cost < 1 else torch.float32
    kept = {d for net in profile.networks().values() for m in net._networks() for d in packed_dtypes(m)}
    assert kept == {dtype}


def packed_dtypes(module) -> set:
    return {d for sub in module.modules() for d in sub.__dict__.get("_emopres_packed", {})}


def test_fast_profile_on_a_cpu_without_bf16_is_exact_untimed(model_dir, monkeypatch):
    from models.paper.profile import PaperProfile

    def no_timing(model, run, waves):
        raise AssertionError("nothing may be timed on a CPU without bf16 instructions")

    monkeypatch.setattr(P, "cpu_native_bf16", lambda flags=None: False)
    monkeypatch.setattr(P, "_timed", no_timing)
    profile = PaperProfile.from_model_dir(model_dir, fast=True)
    assert profile.signature_parts()[-1] == "mode:fp32(fast:no-bf16-cpu)"
    assert {net.precision for net in profile.networks().values()} == {"fp32"}
    assert {c["reason"] for c in profile.fast_choices().values()} == {"no-bf16-cpu"}
    feats = profile.utterance_features(fx.random_waves([0.8], seed=5))
    exact = PaperProfile.from_model_dir(model_dir).utterance_features(fx.random_waves([0.8], seed=5))
    for key in ("ser_input", "speaker", "pcp"):
        np.testing.assert_array_equal(feats[0][key], exact[0][key])  # fast mode is exact mode here


def test_models_check_fast_prints_the_choice(model_dir, short_probe, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": 1.6}))
    main(["models", "check", "--model-dir", str(model_dir), "--fast"])
    out = capsys.readouterr().out
    assert out.startswith("bf16 on this CPU: AVX512-BF16 ")
    assert out.count("fast mode: fp32: bf16 1600 ms vs fp32 1000 ms") == 4
    main(["models", "check", "--model-dir", str(model_dir), "--fast", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["valence_arousal"]["fast_mode"]["mode"] == "fp32"
    assert rows["valence_arousal"]["fast_mode"]["reason"] == "bf16-slower"
    assert rows["autopcp_comparator"]["fast_mode"] is None  # a small MLP: always fp32
