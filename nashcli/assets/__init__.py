"""Files the product carries so it works with no network: the GPT-2 BPE ranks and the built-in corpus."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
GPT2_BPE_PATH = ASSETS_DIR / "gpt2.tiktoken"
# sha256 of tiktoken's r50k_base.tiktoken, the GPT-2 encoding.
GPT2_BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
SHAKESPEARE_PATH = ASSETS_DIR / "shakespeare.jsonl.gz"
