"""Write a tiny random Llama model and its tokenizer to a directory, with no hub access.

Runs INSIDE the vLLM virtualenv (``make vllm-env``: it has torch, transformers and tokenizers),
never in the console's: ``$AIM_VLLM_PYTHON tests/realengine/build_tiny_model.py OUT_DIR``.
Prints one JSON line describing what it wrote.

The weights are random (a fixed seed), so the text it generates is noise; the point is a real
checkpoint in the Hugging Face layout (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template) that vLLM loads and serves like any other.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 1234
VOCAB_SIZE = 512
# vLLM's CPU attention backend takes head sizes 32, 64, 80, ... only: hidden 128 / 4 heads gives
# 32 and stays tiny (418,688 parameters).
SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
DTYPE = torch.bfloat16  # one of the CPU build's dtypes; the test serves it as bfloat16 or float32 (conftest.engine_dtype)

SPECIAL = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

# Training text for the BPE merges: plain ASCII, so every token decodes to text on its own.
CORPUS = """\
The console partitions each accelerator into compute partitions and memory partitions.
A model replica runs on one or more partitions and serves completions over HTTP.
The planner places replicas where the memory fits and the queue stays short.
Operators watch the time to first token, the tokens per second and the queue depth.
When a node drains, its replicas move to other nodes before the partitions change.
Hello world. How are you today? The quick brown fox jumps over the lazy dog.
One two three four five six seven eight nine ten eleven twelve.
""".splitlines()


def build_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[SPECIAL["unk_token"], SPECIAL["bos_token"], SPECIAL["eos_token"], SPECIAL["pad_token"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    bos = SPECIAL["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=SHAPE["max_position_embeddings"],
                                      **SPECIAL)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build(out: Path) -> dict[str, object]:
    """Write the model and tokenizer to ``out``; return a summary (shape, dtype, vocabulary)."""
    random.seed(SEED)
    torch.manual_seed(SEED)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **SHAPE,
    )
    model = LlamaForCausalLM(config).to(DTYPE)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {
        "path": str(out),
        "vocab_size": config.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(DTYPE).removeprefix("torch."),
        **SHAPE,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(f"usage: {argv[0]} OUT_DIR\n")
        return 2
    sys.stdout.write(json.dumps(build(Path(argv[1]))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
