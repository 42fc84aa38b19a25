"""The two image-prompt layouts (``algo.prompt_quirks``): hand-worked cases where the original's
layout and t2ir1's differ, and the engine sampling the original's layout as the original loop does."""

import pytest
import torch

from t2ir1.rollout.engine import GenerationEngine, SamplingOptions
from t2ir1.rollout.image_prompts import image_prompts
from t2ir1.testing.original_rollout import original_image_tokens

PROMPTS = ["a cat", "a red cube"]
# decoded CoTs keep the leading space Janus completions start with
COTS = [" It sits.", " A long long description here"]


def test_original_layout_keeps_the_cots_space_and_right_pads_with_a_position_gap(tiny_policy):
    tok = tiny_policy.tokenizer
    quirk = image_prompts(tiny_policy, PROMPTS, COTS, quirks=True)
    fixed = image_prompts(tiny_policy, PROMPTS, COTS, quirks=False)
    # unstripped CoT: ". " + " It" (two spaces, one token more) in the original, one space in t2ir1's
    assert tok.decode(quirk.ids[0, 1:19]) == "<|User|>: a cat.  It sits.\n\n<|Assistant|>:"
    assert tok.decode(fixed.ids[0, 4:-1]) == "<|User|>: a cat. It sits.\n\n<|Assistant|>:"
    # original: row 0 = BOS + 18 text tokens (slots 0..18), row 1 = BOS + 21; right padding to 22 slots,
    # then <begin_of_image>: 23 slots, numbered 0 .. 22 on both rows (no position ids passed)
    assert quirk.ids.shape == (2, 23)
    assert (quirk.ids[:, -1] == tiny_policy.boi_id).all() and (quirk.ids[:, 0] == tiny_policy.bos_id).all()
    assert quirk.mask[0].tolist() == [1] * 19 + [0, 0, 0] + [1]
    assert (quirk.ids[0, 19:22] == tiny_policy.pad_id).all()
    assert quirk.positions[0].tolist() == list(range(23)) == quirk.positions[1].tolist()
    # the gap: row 0's last text token is at position 18, its <begin_of_image> at 22 (three pad positions
    # between). t2ir1: BOS + 17 text tokens left-padded by 3, positions from the mask, so the last text
    # token is at 17 and <begin_of_image> right after it at 18
    assert int(quirk.positions[0, 18]) == 18 and int(quirk.positions[0, -1]) == 22
    assert fixed.positions is None and fixed.ids.shape == (2, 22)
    assert fixed.mask[0].tolist() == [0] * 3 + [1] * 19
    fixed_positions = (fixed.mask.cumsum(-1) - 1).clamp(min=0)  # the engine's default (positions_from_mask)
    assert int(fixed_positions[0, -2]) == 17 and int(fixed_positions[0, -1]) == 18
    # unconditional rows: every position attended in the original; t2ir1 uses the prompt's mask
    assert quirk.uncond_mask.tolist() == [[1] * 23] * 2
    assert fixed.uncond_mask is None


def test_quirk_options_refuse_the_short_unconditional_rows():
    with pytest.raises(ValueError, match="prompt_quirks=True and cfg_uncond='short'"):
        SamplingOptions(prompt_quirks=True, cfg_uncond="short")


@pytest.mark.parametrize("cfg_weight", [1.0, 5.0])
def test_engine_samples_the_original_layout_as_the_original_loop(tiny_policy, cfg_weight):
    """Greedy tokens of the one generation path on the quirk layout equal the original's loop
    (right padding, no position ids, interleaved CFG rows attending everywhere) run through
    transformers; on t2ir1's layout the padded row's tokens differ."""
    quirk = image_prompts(tiny_policy, PROMPTS, COTS, quirks=True)
    engine = GenerationEngine(
        tiny_policy, SamplingOptions(cfg_weight=cfg_weight, image_temperature=0.0, prompt_quirks=True)
    )
    ours, ours_logp, _ = engine.sample_images(
        quirk.ids,
        quirk.mask,
        1,
        None,
        position_ids=quirk.positions,
        uncond_mask=quirk.uncond_mask,
        decode=False,
    )
    # temperature 1e-6 makes the original's softmax one-hot: multinomial draws the argmax
    torch.manual_seed(0)
    theirs = original_image_tokens(
        tiny_policy, quirk.ids, quirk.mask, cfg_weight=cfg_weight, temperature=1e-6
    )
    assert torch.equal(ours, theirs)
    fixed = image_prompts(tiny_policy, PROMPTS, COTS, quirks=False)
    plain = GenerationEngine(tiny_policy, SamplingOptions(cfg_weight=cfg_weight, image_temperature=0.0))
    fixed_tokens, fixed_logp, _ = plain.sample_images(fixed.ids, fixed.mask, 1, None, decode=False)
    assert not torch.allclose(ours_logp[0], fixed_logp[0], atol=1e-3)  # the layouts are different inputs
