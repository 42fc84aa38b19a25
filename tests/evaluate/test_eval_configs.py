"""Every benchmark config composes with its defaults and builds (no weights are loaded before setup)."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException

from t2ir1.evaluate.dpg import DPGBenchmark
from t2ir1.evaluate.echo4o import GenEvalPPBenchmark, ImagineBenchmark
from t2ir1.evaluate.geneval import GenEvalBenchmark
from t2ir1.evaluate.harness import build_benchmark
from t2ir1.evaluate.judges import GroundingDetector, Mask2FormerDetector
from t2ir1.evaluate.oneig import DreamSimEmbedder, OneIGBenchmark
from t2ir1.evaluate.vqa import BlipYesNoJudge, ChatYesNoJudge
from t2ir1.evaluate.wise import LocalVlmJudge, OpenAICompatibleJudge


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        (("benchmark=dpg", "benchmark.prompts_dir=/p", "benchmark.csv_path=/c.csv"), DPGBenchmark),
        (("benchmark=geneval_pp", "benchmark.metadata=/m.jsonl"), GenEvalPPBenchmark),
        (("benchmark=imagine", "benchmark.metadata=/m.jsonl"), ImagineBenchmark),
        (
            (
                "benchmark=oneig",
                "benchmark.csv_path=/o.csv",
                "benchmark.qd_dir=/q",
                "benchmark.text_csv=/t.csv",
            ),
            OneIGBenchmark,
        ),
        (("benchmark=geneval", "benchmark.metadata=/m.jsonl"), GenEvalBenchmark),
    ],
)
def test_benchmark_configs_build(eval_cfg, overrides, kind):
    benchmark, generation, scoring = build_benchmark(eval_cfg(*overrides).benchmark)
    assert isinstance(benchmark, kind) and generation == {} and scoring["name"] == benchmark.name
    judges = benchmark.describe_judges()  # provenance without loading anything
    assert judges


def test_default_judges_and_detectors(eval_cfg):
    dpg, _, _ = build_benchmark(
        eval_cfg("benchmark=dpg", "benchmark.prompts_dir=/p", "benchmark.csv_path=/c").benchmark
    )
    assert isinstance(dpg.judge, BlipYesNoJudge) and dpg.judge.model_path == "Salesforce/blip-vqa-base"
    chat, _, _ = build_benchmark(
        eval_cfg(
            "benchmark=dpg", "benchmark/judge=local_vlm", "benchmark.prompts_dir=/p", "benchmark.csv_path=/c"
        ).benchmark
    )
    assert isinstance(chat.judge, ChatYesNoJudge) and isinstance(chat.judge.judge, LocalVlmJudge)
    pp, _, _ = build_benchmark(eval_cfg("benchmark=geneval_pp", "benchmark.metadata=/m").benchmark)
    assert isinstance(pp.judge, OpenAICompatibleJudge) and pp.judge.model == "gpt-4.1"
    oneig, _, _ = build_benchmark(
        eval_cfg(
            "benchmark=oneig", "benchmark.csv_path=/o", "benchmark.qd_dir=/q", "benchmark.text_csv=/t"
        ).benchmark
    )
    assert oneig.judge.model_path == "Qwen/Qwen2.5-VL-7B-Instruct" and oneig.judge.max_new_tokens == 256
    assert isinstance(oneig.embedder, DreamSimEmbedder) and oneig.embedder.weights_dir is None
    gd, _, _ = build_benchmark(eval_cfg("benchmark=geneval", "benchmark.metadata=/m").benchmark)
    assert isinstance(gd.detector, GroundingDetector) and (gd.counting_threshold, gd.max_overlap) == (
        0.35,
        0.5,
    )
    m2f, _, _ = build_benchmark(
        eval_cfg("benchmark=geneval", "benchmark.metadata=/m", "benchmark.detector=mask2former").benchmark
    )
    assert isinstance(m2f.detector, Mask2FormerDetector) and (m2f.counting_threshold, m2f.max_overlap) == (
        0.9,
        1.0,
    )
    with pytest.raises(InstantiationException, match="detector .yolo. is not one of"):
        build_benchmark(
            eval_cfg("benchmark=geneval", "benchmark.metadata=/m", "benchmark.detector=yolo").benchmark
        )
