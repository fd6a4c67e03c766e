"""The drift reference is drawn as TRL draws the policy (top_k 0, top_p 1), not with transformers' default top_k 50."""

import torch


def test_base_samples_are_drawn_from_the_whole_distribution(tiny_gemma, tiny_tokenizer):
    from tether.watch.drift import sample_base

    assert len(tiny_tokenizer) > 50  # else top_k 50 would be the whole vocabulary and this test could not fail
    got = sample_base(tiny_gemma, tiny_tokenizer, ["Once upon a time"], 8, 6, 1.0, None, seed=3)["Once upon a time"]
    ids = torch.tensor([tiny_tokenizer("Once upon a time")["input_ids"]]).repeat(8, 1)

    def draw(**sampling):
        torch.manual_seed(3)
        out = tiny_gemma.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                  max_new_tokens=6, pad_token_id=tiny_tokenizer.pad_token_id, **sampling)
        return tiny_tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)

    assert got == draw(top_k=0, top_p=1.0)  # TRL's GRPOConfig defaults, the policy's own sampling
    assert got != draw(top_k=50)  # what the reference was drawn with before
