#!/usr/bin/env python3
"""The default BareGPT model in PyTorch on the CPU, timed step by step for bench/torch_compare.ts.

The same model as lib/model.ts (docs: DESIGN.md "Model"), written plainly: token + position
embeddings, pre-LN blocks (fused QKV causal self-attention, 4x MLP with GELU's tanh
approximation), a final LayerNorm and the tied head (logits = ln_f(x) @ wte^T); float32; AdamW
with the project's defaults (lib/options.ts TRAIN_OPTIONS: lr 4e-3 with 50 steps of linear warmup
then a linear decay, betas (0.8, 0.95), eps 1e-8, weight decay 0.3 on 2-D weights only, global
gradient-norm clip 1.0, dropout 0). Each step draws a random batch of windows from the first 90%
of the corpus's tokens (as the project's trainer does), runs forward, cross-entropy, backward, the
clip and the AdamW update.

Attention: explicit matmul + masked softmax by default ("matmul"). "sdpa"
(F.scaled_dot_product_attention with is_causal) needs PyTorch 2.0 or later; "auto" (the default)
times both for a few steps when both exist and keeps the faster one.

Protocol (a long-lived child driven over stdin/stdout, one JSON object a line):
  first line out: {"ready": true, "torch": ..., "threads": N, "blas": ..., "params": ..., ...}
  "step K" in   -> {"ms": [t1, ..., tK], "loss": last loss}
  "quit" in (or end of input) -> exit 0

Threads: torch.set_num_threads(N) sizes PyTorch's OpenMP pool and OPENBLAS_NUM_THREADS=N (set
before `import torch`) the pthread OpenBLAS's own pool, so that N threads do each matrix product.
The two pools are separate, and libgomp's idle threads spin for a while by default, which on a
machine with N cores competes with OpenBLAS's threads; --omp-passive (OMP_WAIT_POLICY=PASSIVE)
lets them sleep instead.

Usage: python3 bench/torch_step.py --corpus FILE [--threads N] [--omp-passive] [--batch 16]
       [--block 128] [--d-model 256] [--layers 2] [--heads 4] [--steps 1000]
       [--attention auto|matmul|sdpa]
"""

import argparse
import json
import math
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--corpus", required=True)
parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
parser.add_argument("--batch", type=int, default=16)
parser.add_argument("--block", type=int, default=128)
parser.add_argument("--d-model", type=int, default=256)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--steps", type=int, default=1000, help="length of the lr schedule")
parser.add_argument("--attention", choices=["auto", "matmul", "sdpa"], default="auto")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument(
    "--omp-passive",
    action="store_true",
    help="OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning beside OpenBLAS's",
)
args = parser.parse_args()

# PyTorch from Debian is built against the generic libblas.so.3 and takes whichever BLAS the
# alternatives system points that name at. When it points at anything but the pthread OpenBLAS
# (the reference BLAS, say), run this process again with the pthread OpenBLAS first on the
# library path (this process only) and say so in the first line.
blas_note = os.environ.pop("BAREGPT_BLAS_NOTE", "")
if not blas_note:
    for lib in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        link, pthread = f"{lib}/libblas.so.3", f"{lib}/openblas-pthread"
        if not os.path.exists(link):
            continue
        target = os.path.realpath(link)
        if "openblas-pthread" not in target and os.path.exists(f"{pthread}/libblas.so.3"):
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [pthread, env.get("LD_LIBRARY_PATH")]))
            env["BAREGPT_BLAS_NOTE"] = (
                f"libblas.so.3 points at {target}; this process put {pthread} first on "
                "LD_LIBRARY_PATH to use the pthread OpenBLAS"
            )
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
        elif "openblas-pthread" not in target:
            blas_note = f"libblas.so.3 points at {target} and no pthread OpenBLAS is installed"
        break


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# OpenBLAS sizes its thread pool when it is loaded (at `import torch`), and torch.set_num_threads
# does not reach it: ask for the same count before the import.
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
os.environ["OMP_NUM_THREADS"] = str(args.threads)
if args.omp_passive:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)


def loaded_blas():
    """The BLAS libraries mapped into this process (which one the dynamic linker chose)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path)
                if "blas" in name or "lapack" in name:
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def blas_name(config, libs):
    m = [p for p in config.split() if p.startswith("BLAS_INFO=")]
    built = m[0].split("=", 1)[1].rstrip(",") if m else "unknown"
    if any("openblas-pthread" in p for p in libs):
        runtime = "OpenBLAS (pthread)"
    elif any("openblas-openmp" in p for p in libs):
        runtime = "OpenBLAS (OpenMP)"
    elif any("openblas-serial" in p for p in libs):
        runtime = "OpenBLAS (serial)"
    elif any("openblas" in p for p in libs):
        runtime = "OpenBLAS"
    elif any("/blas/" in p or p.endswith("libblas.so.3") for p in libs):
        runtime = "reference BLAS (netlib)"
    elif any("mkl" in p for p in libs) or "mkl" in built:
        runtime = "MKL"
    else:
        runtime = "unknown"
    return built, runtime


# --- data: code-point vocabulary (sorted distinct characters), train on the first 90% ---
with open(args.corpus, encoding="utf-8") as f:
    text = f.read()
chars = sorted(set(text))
index = {c: i for i, c in enumerate(chars)}
tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
train = tokens[: int(len(tokens) * 0.9)]
V, T, D, L, H, B = len(chars), args.block, args.d_model, args.layers, args.heads, args.batch


def batch():
    ix = torch.randint(len(train) - T - 1, (B,))
    x = torch.stack([train[i : i + T] for i in ix.tolist()])
    y = torch.stack([train[i + 1 : i + 1 + T] for i in ix.tolist()])
    return x, y


# --- the model: GPT-2 layout (weights stored [in, out] as GPT-2's Conv1D) ---
class GPT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        P = torch.nn.Parameter

        def normal(*shape, std=0.02):
            return P(torch.randn(*shape) * std)

        def zeros(*shape):
            return P(torch.zeros(*shape))

        def ones(*shape):
            return P(torch.ones(*shape))

        proj_std = 0.02 / math.sqrt(2 * L)
        self.wte = normal(V, D)
        self.wpe = normal(T, D)
        self.h = torch.nn.ModuleList()
        for _ in range(L):
            blk = torch.nn.Module()
            blk.ln_1_w, blk.ln_1_b = ones(D), zeros(D)
            blk.attn_w, blk.attn_b = normal(D, 3 * D), zeros(3 * D)
            blk.attn_proj_w, blk.attn_proj_b = normal(D, D, std=proj_std), zeros(D)
            blk.ln_2_w, blk.ln_2_b = ones(D), zeros(D)
            blk.fc_w, blk.fc_b = normal(D, 4 * D), zeros(4 * D)
            blk.fc_proj_w, blk.fc_proj_b = normal(4 * D, D, std=proj_std), zeros(D)
            self.h.append(blk)
        self.ln_f_w, self.ln_f_b = ones(D), zeros(D)
        self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).tril().logical_not())
        self.attention = "matmul"

    def attend(self, q, k, v):
        # q, k, v: [B, H, T, hd]
        if self.attention == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        att = att.masked_fill(self.mask[: q.shape[2], : q.shape[2]], float("-inf"))
        return torch.softmax(att, dim=-1) @ v

    def forward(self, idx, targets):
        b, t = idx.shape
        x = self.wte[idx] + self.wpe[:t]
        for blk in self.h:
            a = F.layer_norm(x, (D,), blk.ln_1_w, blk.ln_1_b, 1e-5)
            qkv = torch.addmm(blk.attn_b, a.view(b * t, D), blk.attn_w).view(b, t, 3, H, D // H)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T, hd]
            y = self.attend(q, k, v).transpose(1, 2).reshape(b * t, D)
            x = x + torch.addmm(blk.attn_proj_b, y, blk.attn_proj_w).view(b, t, D)
            m = F.layer_norm(x, (D,), blk.ln_2_w, blk.ln_2_b, 1e-5).view(b * t, D)
            m = F.gelu(torch.addmm(blk.fc_b, m, blk.fc_w), approximate="tanh")
            x = x + torch.addmm(blk.fc_proj_b, m, blk.fc_proj_w).view(b, t, D)
        x = F.layer_norm(x, (D,), self.ln_f_w, self.ln_f_b, 1e-5)
        logits = x.view(b * t, D) @ self.wte.t()  # tied head
        return F.cross_entropy(logits, targets.view(b * t))


model = GPT()
params = list(model.parameters())
n_params = sum(p.numel() for p in params)
decay = [p for p in params if p.dim() == 2]
no_decay = [p for p in params if p.dim() != 2]
LR, WARMUP, MIN_LR, CLIP = 4e-3, 50, 0.0, 1.0
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.3}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LR,
    betas=(0.8, 0.95),
    eps=1e-8,
)
step_no = 0


def learning_rate(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / max(1, args.steps - 1 - WARMUP))
    return MIN_LR + (LR - MIN_LR) * (1 - progress)


def train_step():
    global step_no
    x, y = batch()
    loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, CLIP)
    for g in opt.param_groups:
        g["lr"] = learning_rate(step_no)
    opt.step()
    step_no += 1
    return loss.item()


def timed(k):
    ms, loss = [], float("nan")
    for _ in range(k):
        t0 = time.perf_counter()
        loss = train_step()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms, loss


has_sdpa = hasattr(F, "scaled_dot_product_attention")
tried = {}
if args.attention == "sdpa" and not has_sdpa:
    sys.exit(f"--attention sdpa needs PyTorch 2.0 or later (this is {torch.__version__})")
if args.attention == "auto" and has_sdpa:
    # warm up, then keep whichever attention path trains faster here
    timed(2)
    for path in ("matmul", "sdpa"):
        model.attention = path
        timed(1)
        tried[path] = sorted(timed(3)[0])[1]
    model.attention = min(tried, key=tried.get)
else:
    model.attention = "sdpa" if args.attention == "sdpa" else "matmul"

libs = loaded_blas()
config = torch.__config__.show()
built, runtime = blas_name(config, libs)
info = {
    "ready": True,
    "torch": torch.__version__,
    "python": sys.version.split()[0],
    "threads": torch.get_num_threads(),
    "blas": runtime,
    "blas_built": built,
    "blas_libs": libs,
    "blas_note": blas_note,
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    "params": n_params,
    "vocab": V,
    "attention": model.attention,
    "attention_tried_ms": tried,
    "sdpa_available": has_sdpa,
}
print(json.dumps(info), flush=True)

for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "quit":
        break
    if cmd[0] == "step":
        ms, loss = timed(int(cmd[1]) if len(cmd) > 1 else 1)
        print(json.dumps({"ms": ms, "loss": loss}), flush=True)
    else:
        print(json.dumps({"error": f"unknown command {cmd[0]!r}"}), flush=True)
