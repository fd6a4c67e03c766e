"""The constitution reward is a TRL reward function: plain callable, and it trains."""

import numpy as np
from test_evaluator import constitution

from tether.judge.evaluator import Evaluator
from tether.rewards.constitution import ConstitutionReward


def test_reward_is_the_evaluator_total(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer)
    reward = ConstitutionReward(ev)
    prompts, completions = ["Once upon a time", "The dog"], [" we laugh.", " died."]
    got = reward(prompts=prompts, completions=completions, extra_column=[1, 2])
    np.testing.assert_allclose(got, ev.score(["Once upon a time we laugh.", "The dog died."]).total(), atol=1e-6)
    alone = ConstitutionReward(ev, include_prompt=False)(prompts=prompts, completions=completions)
    np.testing.assert_allclose(alone, ev.score(completions).total(), atol=1e-6)
    assert reward.__name__ == "constitution" and reward.last_result.texts[0] == "Once upon a time we laugh."


def test_chat_format_completions(tiny_gemma, tiny_tokenizer):
    reward = ConstitutionReward(Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer), include_prompt=False)
    chat = [[{"role": "assistant", "content": "we laugh."}]]
    assert reward(prompts=[[{"role": "user", "content": "hi"}]], completions=chat) == reward(prompts=["hi"], completions=["we laugh."])


def test_trains_under_trl_grpo(tmp_path, tiny_gemma, tiny_tokenizer):
    """Two real GRPO steps with LoRA on the tiny model: TRL calls the reward and logs it."""
    from conftest import build_tiny_gemma
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    policy = build_tiny_gemma(len(tiny_tokenizer))
    reward = ConstitutionReward(Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer))
    config = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        beta=0.04, learning_rate=1e-3, seed=0,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward], args=config, processing_class=tiny_tokenizer,
        train_dataset=Dataset.from_dict({"prompt": ["Once upon a time", "The dog", "Read each text", "Is the"]}),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "rewards/constitution/mean" in entry]
    assert len(logged) == 2 and all(np.isfinite(e["rewards/constitution/mean"]) for e in logged)
    assert "kl" in logged[0]  # beta > 0: TRL logs the token KL to the reference
