"""`infra.models.fast_cpu_head`: the vocabulary head as W @ h.T when no gradient is needed, F.linear otherwise."""

import copy

import torch

from tether.infra.models import _transposed_head_forward, fast_cpu_head, load_causal_lm


def test_fast_head_gives_the_same_logits_and_keeps_training_on_f_linear(tiny_model_dir):
    plain, _ = load_causal_lm(str(tiny_model_dir), device="cpu")  # a user's load: transformers' model, untouched
    assert "forward" not in vars(plain.get_output_embeddings())
    model, _ = load_causal_lm(str(tiny_model_dir), device="cpu", fast_head=True)  # tether's commands opt in
    head = model.get_output_embeddings()
    assert head.forward.__func__ is _transposed_head_forward and head.forward.__self__ is head
    ids = torch.randint(3, 100, (3, 7))
    with torch.no_grad():
        fast = model(input_ids=ids).logits
        del head.forward  # the plain nn.Linear
        plain = model(input_ids=ids).logits
    assert fast.shape == plain.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)

    fast_cpu_head(model)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss  # grad enabled: F.linear, and the gradient reaches the head
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0

    twin = copy.deepcopy(model)  # rebound to the copy's head, not the original's weights
    assert twin.get_output_embeddings().forward.__self__ is twin.get_output_embeddings()


def test_fast_head_leaves_other_heads_alone(tiny_gemma):
    model = copy.deepcopy(tiny_gemma)
    model.lm_head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    fast_cpu_head(model)
    assert "forward" not in vars(model.lm_head)  # a biased head keeps nn.Linear's own forward
