"""The PyTorch side of bench/vs_pytorch.py, written the way PyTorch users write it.

Hugging Face `TimesformerForVideoClassification` (input (B, T, C, H, W)) for the RGB and flow
TimeSformers, bench/torch_stlt.py for the layout teacher, `torch.optim.AdamW` with the recipe's
hyper-parameters, the same weight-decay exclusions as `mmkd_jax.train.optim`, warm-up + linear
decay through `LambdaLR`, gradient clipping 5.0. Distillation as in the authors' loop: teachers
in eval mode under `torch.no_grad()`, student in train mode, `F.kl_div(log_softmax(s / tau),
log_softmax(t / tau), log_target=True, reduction="batchmean") * tau ** 2`.
"""
from __future__ import annotations

import contextlib
import os
import re
import time

import cases
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch_stlt import Stlt


def _hf(path: str, spec: dict, device: str, train: bool) -> torch.nn.Module:
    """A saved TimeSformer; the student trains with the preset's stochastic depth."""
    channels = transformers.TimesformerConfig.from_pretrained(path).num_channels
    config = cases.hf_config(spec, num_channels=channels,
                             drop_path_rate=spec["timesformer"]["drop_path_rate"] if train else 0)
    return transformers.TimesformerForVideoClassification.from_pretrained(
        path, config=config).to(device)


def _stlt(path: str, spec: dict, device: str) -> torch.nn.Module:
    model = Stlt(**cases.stlt_torch_kwargs(spec))
    state = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    model.load_state_dict(state)
    return model.to(device)


def _param_groups(model: torch.nn.Module, weight_decay: float, exclude) -> list[dict]:
    """Decay only >1-d weights whose name matches no `exclude` regex, as optim.decay_mask."""
    patterns = [re.compile(p) for p in exclude]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim <= 1 or any(pat.search(name) for pat in patterns)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups: list[dict], o: dict):
    """AdamW with the recipe's hyper-parameters and its warm-up + linear decay schedule."""
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["b1"], o["b2"]), eps=o["eps"])
    warmup = max(1, round(o["warmup_frac"] * o["total_steps"]))
    decay = max(1, o["total_steps"] - warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warmup if s < warmup else max(0.0, 1 - (s - warmup) / decay))
    return opt, sched


# HF names of the parameters the JAX recipe excludes from weight decay.
HF_WD_EXCLUDE = (r"position_embeddings", r"time_embeddings", r"cls_token")


class TorchCase:
    """One workload (train / distill / infer) on one size; `step()` runs one step."""

    def __init__(self, spec: dict, weights: str, compile_model: bool, device: str, dtype: str):
        self.spec, self.device = spec, device
        self.autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
                         if dtype == "bfloat16" else contextlib.nullcontext())
        batch = {k: torch.from_numpy(v).to(device) for k, v in cases.batch(spec).items()}
        self.batch = batch
        # Hugging Face takes (B, T, C, H, W); the batch is channel-last like the JAX pipeline.
        self.rgb = batch["rgb"].permute(0, 1, 4, 2, 3).contiguous()
        self.flow = batch["flow"].permute(0, 1, 4, 2, 3).contiguous()
        self.labels = batch["label"].long()
        self.boxes, self.cats = batch["boxes"], batch["categories"].long()
        wrap = torch.compile if compile_model else (lambda m: m)

        self.student = _hf(os.path.join(weights, "student"), spec, device,
                           train=spec["workload"] != "infer")
        workload = spec["workload"]
        if workload == "infer":
            self.student.eval()
            self.forward = wrap(self.student)
            return
        self.student.train()
        self.forward = wrap(self.student)
        # K models trained one after another (spec["population"]): each its own student,
        # optimiser and schedule, each step running its own teacher pass.
        self.students = [self.student] + [
            _hf(os.path.join(weights, "student"), spec, device, train=True).train()
            for _ in range(int(spec.get("population", 1)) - 1)]
        self.forwards = [self.forward] + [wrap(m) for m in self.students[1:]]
        self.teachers = []
        if workload == "distill":
            rgb_t = _hf(os.path.join(weights, "teacher_rgb"), spec, device, False).eval()
            flow_t = _hf(os.path.join(weights, "teacher_flow"), spec, device, False).eval()
            stlt = _stlt(os.path.join(weights, "teacher_layout.npz"), spec, device).eval()
            for m in (rgb_t, flow_t, stlt):
                m.requires_grad_(False)
            self.teachers = [wrap(rgb_t), wrap(flow_t), wrap(stlt)]
        self.opts = [_adamw(_param_groups(m, spec["optim"]["weight_decay"], HF_WD_EXCLUDE),
                            spec["optim"]) for m in self.students]

    def teacher_logits(self) -> torch.Tensor:
        rgb_t, flow_t, stlt = self.teachers
        with torch.no_grad():
            logits = (rgb_t(pixel_values=self.rgb).logits.float()
                      + flow_t(pixel_values=self.flow).logits.float()
                      + stlt(self.boxes, self.cats).float())
        return logits / 3

    def loss(self, logits: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if not self.teachers:
            return F.cross_entropy(logits, self.labels)
        tau = self.spec["tau"]
        teacher = self.teacher_logits() if teacher is None else teacher
        return F.kl_div(F.log_softmax(logits / tau, -1), F.log_softmax(teacher / tau, -1),
                        log_target=True, reduction="batchmean") * tau**2

    def step(self) -> torch.Tensor:
        if self.spec["workload"] == "infer":
            with torch.inference_mode(), self.autocast:
                return self.forward(pixel_values=self.rgb).logits
        for student, forward, (opt, sched) in zip(self.students, self.forwards, self.opts):
            with self.autocast:
                loss = self.loss(forward(pixel_values=self.rgb).logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), self.spec["optim"]["clip_norm"])
            opt.step()
            sched.step()
        return loss.detach()

    def sync(self, out) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def check(self) -> list[float]:
        """Deterministic numbers to compare with JAX: eval-mode logits or loss, no update."""
        self.student.eval()
        with torch.no_grad():
            logits = self.student(pixel_values=self.rgb).logits.float()
            out = logits[0, :8] if self.spec["workload"] == "infer" else self.loss(logits)[None]
        if self.spec["workload"] != "infer":
            self.student.train()
        return [float(v) for v in out.cpu()]

    def setup(self) -> dict:
        """First step (eager: warm-up; compiled: tracing + Inductor compile), then one more."""
        check = self.check()
        start = time.perf_counter()
        self.sync(self.step())
        first = time.perf_counter() - start
        start = time.perf_counter()
        self.sync(self.step())
        second = time.perf_counter() - start
        return {"first_step_s": first, "second_step_s": second, "check": check}

    def memory(self) -> dict:
        if self.device.startswith("cuda"):
            return {"device_peak_bytes": int(torch.cuda.max_memory_allocated())}
        return {}

    def reset_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()


class TorchVmapCase(TorchCase):
    """PyTorch's own vectorised form of K models: `torch.func.stack_module_state`,
    `functional_call` + `grad_and_value` under `vmap` (forward and backward of all students in
    one call), the teacher once per step, AdamW over the stacked tensors with each model's
    gradient clipped to its own global norm."""

    def __init__(self, spec: dict, weights: str, device: str, dtype: str):
        import copy

        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        super().__init__(spec, weights, compile_model=False, device=device, dtype=dtype)
        if spec["workload"] == "infer":
            raise ValueError("torch_vmap times train and distill steps only")
        params, buffers = stack_module_state(self.students)
        self.names = list(params)
        self.stacked = [params[n].detach().clone() for n in self.names]
        self.buffers = buffers
        base = copy.deepcopy(self.students[0]).to("meta")

        def loss_fn(p: dict, b: dict, teacher):
            with self.autocast:
                logits = functional_call(base, (p, b), (), {"pixel_values": self.rgb}).logits
            return self.loss(logits, teacher)

        self.grad_fn = vmap(grad_and_value(loss_fn), in_dims=(0, 0, None),
                            randomness="different")
        patterns = [re.compile(x) for x in HF_WD_EXCLUDE]
        skip = lambda n, t: t.ndim <= 2 or any(x.search(n) for x in patterns)  # + member axis
        o = spec["optim"]
        groups = [{"params": [t for n, t in zip(self.names, self.stacked) if not skip(n, t)],
                   "weight_decay": o["weight_decay"]},
                  {"params": [t for n, t in zip(self.names, self.stacked) if skip(n, t)],
                   "weight_decay": 0.0}]
        self.opt, self.sched = _adamw(groups, o)

    def step(self) -> torch.Tensor:
        teacher = self.teacher_logits() if self.teachers else None
        grads, loss = self.grad_fn(dict(zip(self.names, self.stacked)), self.buffers, teacher)
        grads = [grads[n] for n in self.names]
        k = self.stacked[0].shape[0]
        norm = torch.sqrt(sum(g.float().pow(2).reshape(k, -1).sum(1) for g in grads))
        scale = (self.spec["optim"]["clip_norm"] / (norm + 1e-6)).clamp(max=1.0)
        for t, g in zip(self.stacked, grads):
            t.grad = g * scale.reshape((k,) + (1,) * (g.ndim - 1)).to(g.dtype)
        self.opt.step()
        self.sched.step()
        return loss.detach()
