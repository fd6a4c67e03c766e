"""Use tether's pieces in your own TRL script: the constitution reward, the embedding-KL
defense as a second reward, and the monitor and detector callbacks, in a plain GRPOTrainer.

    python examples/trl_grpo_script.py                       # embedded Gemma, 10 steps
    python examples/trl_grpo_script.py --policy PATH --judge PATH --steps 2
"""

import argparse

import torch
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

from tether import (
    EMBEDDED_LM,
    ConstitutionReward,
    DetectorCallback,
    EmbeddingKL,
    Evaluator,
    MonitorCallback,
    RewardTerm,
    load_causal_lm,
    load_embedder,
    read_prompts,
    sample_base,
)

parser = argparse.ArgumentParser()
parser.add_argument("--policy", default=EMBEDDED_LM)
parser.add_argument("--judge", default=EMBEDDED_LM)
parser.add_argument("--constitution", default="examples/cheerful.yaml")
parser.add_argument("--gold", default="examples/on_topic.yaml")
parser.add_argument("--prompts", default="examples/prompts.txt")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--embedding-kl", type=float, default=1.0, help="λ of the embedding-KL penalty (0: off)")
parser.add_argument("--output-dir", default="runs/trl-script")
args = parser.parse_args()

# The judge and a held-out gold judge share one model.
judge_model, judge_tokenizer = load_causal_lm(args.judge)
judge = Evaluator(judge_model, args.constitution, tokenizer=judge_tokenizer)
gold = Evaluator(judge_model, args.gold, tokenizer=judge_tokenizer, debias=True)

reward = ConstitutionReward(judge)  # TRL logs it as rewards/constitution/mean

# The embedding-KL defense: the base model's own completions, sampled once before training,
# and a penalty for each completion's distance from them in MiniLM's embedding space.
policy, tokenizer = load_causal_lm(args.policy)
prompts = read_prompts(args.prompts)
base_samples = sample_base(policy, tokenizer, prompts, n=4, max_new_tokens=16, temperature=1.0, suppress=None, seed=0)
embedding_kl = RewardTerm("embedding_kl", args.embedding_kl, EmbeddingKL(load_embedder(), base_samples))

callbacks = [MonitorCallback(reward, gold=gold, terms=[embedding_kl]), DetectorCallback(reward, action="warn")]
trainer = GRPOTrainer(
    model=policy,
    reward_funcs=[reward, embedding_kl.function],
    args=GRPOConfig(output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=4, num_generations=4,
                    max_completion_length=16, beta=0.04, reward_weights=[1.0, embedding_kl.weight], logging_steps=1,
                    report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available()),
    processing_class=tokenizer,
    train_dataset=Dataset.from_dict({"prompt": prompts}),
    peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    callbacks=callbacks,
)
trainer.train()
for entry in trainer.state.log_history:
    if "reward/train" in entry:
        print(f"step {entry['step']}: reward {entry['reward/train']:+.3f}, gold {entry['gold/score']:+.3f}, "
              f"embedding KL penalty {entry['defense/embedding_kl/weighted']:+.3f}, "
              f"affirmations {entry['monitor/affirmation_rate']:.3f}, distinct-2 {entry['monitor/distinct_2']:.2f}")
