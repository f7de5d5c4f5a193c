"""One played frame as one ONNX graph: the sampler at a fixed step count, then the decoder.

The graph is traced from the modules play runs (`Diffusion.sample` with its guidance branches, context
noise, residual base and ego-motion warp, then `Autoencoder.decode`), so whatever the sampler does for
a checkpoint's config the export does too; nothing of the sampler is written again here. Its inputs are
what `WorldModelEnv.step` puts in its buffers (world_model/model/capture.py):

    context        (1, K, C, h, w) float32  latents of the last K frames
    actions        (1, K+1, fields) int64   the actions that led into them, then the current one
    noise          (1, C, h, w)     float32 the sampler's starting noise
    context_noise  (1, K, C, h, w)  float32 the sampler's context noise, only where it draws one

and its outputs the next latent `latent` (1, C, h, w) float32 and its picture `frame` (1, H, W, 3) uint8.
A caller rolls the context as WorldModelEnv does: drop the oldest latent, append `latent`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from world_model.model.autoencoder import to_pixels
from world_model.model.checkpoint import WorldModelCheckpoint

# ONNX opset of the export: GridSample (the ego-motion warp) needs 16; 18 is what ONNX Runtime Web 1.30
# runs in full on its WASM backend.
OPSET = 18
INPUTS = ("context", "actions", "noise", "context_noise")
OUTPUTS = ("latent", "frame")


class StepGraph(nn.Module):
    """(context, actions, noise[, context_noise]) -> (next latent, its frame): play's step as a function."""

    def __init__(self, ckpt: WorldModelCheckpoint, steps: int):
        super().__init__()
        self.dit, self.ae, self.process, self.steps = ckpt.dit, ckpt.ae, ckpt.process, steps

    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        noise: torch.Tensor,
        context_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.process.sample(
            self.dit, context, actions, self.steps, noise=noise, context_eps=context_noise
        )  # (1, C, h, w)
        return latent, to_pixels(self.ae.decode(latent))  # (1, H, W, 3) uint8


def step_input_names(ckpt: WorldModelCheckpoint) -> tuple[str, ...]:
    """The graph's inputs for this checkpoint: context noise only where its sampler draws one."""
    return INPUTS if ckpt.process.draws_context_noise else INPUTS[:3]


def example_inputs(ckpt: WorldModelCheckpoint) -> tuple[torch.Tensor, ...]:
    """Inputs of the graph's shapes (zeros and no-op actions), in `step_input_names` order."""
    cfg = ckpt.dit_cfg
    k, c, (h, w) = cfg.context_len, cfg.latent_channels, cfg.latent_size
    noop = torch.as_tensor(ckpt.action_spec.noop(), dtype=torch.long)
    tensors = (
        torch.zeros(1, k, c, h, w),
        noop.repeat(1, k + 1, 1),  # (1, K+1, fields)
        torch.zeros(1, c, h, w),
        torch.zeros(1, k, c, h, w),
    )
    return tensors[: len(step_input_names(ckpt))]


def export_step(ckpt: WorldModelCheckpoint, steps: int, path: str | Path) -> Path:
    """Write the step graph of `ckpt` at `steps` sampler steps to `path` (.onnx, weights inside)."""
    ckpt.dit.eval()
    ckpt.ae.eval()
    graph = StepGraph(ckpt, steps).eval()
    names = step_input_names(ckpt)
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export one turns the sampler's Python floats taken from
        # tensors (the context-noise level) into symbolic values it cannot convert. Its trace warnings
        # name those same constants, which are constants of one checkpoint's graph by design.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example_inputs(ckpt),
            str(path),
            input_names=list(names),
            output_names=list(OUTPUTS),
            opset_version=OPSET,
            dynamo=False,
        )
    return Path(path)


def optimize(path: str | Path) -> Path:
    """Rewrite the graph at `path` with ONNX Runtime's fusions that hold on any hardware (its EXTENDED level:
    matmul + bias, convolution + activation, GELU, layer norm), which ONNX Runtime Web would otherwise redo
    at every page load: the browser's session then starts in about half the CPU time (0.8 s against 1.6 s
    for the shipped model's 2-step graph, measured in Node). The layout level after it is left out: its
    blocked layouts are for x86 vector units, which WebAssembly does not have."""
    import onnxruntime as ort

    path = Path(path)
    tmp = path.with_name(path.name + ".opt")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp)
    options.log_severity_level = 3  # not the notes about nodes it places on the CPU
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tmp.replace(path)
    return path


def share_weights(graphs: list[Path], weights: Path, min_bytes: int = 1024) -> None:
    """Move the initializers of `graphs` into one external-data file beside them, each distinct tensor once:
    the graphs of several step counts then hold one copy of the weights between them (ONNX external data,
    which ONNX Runtime reads relative to the graph and ONNX Runtime Web from the session's externalData)."""
    import hashlib

    import onnx
    from onnx.external_data_helper import set_external_data

    placed: dict[str, tuple[int, int]] = {}  # content key -> (offset, length)
    with open(weights, "wb") as f:
        for path in graphs:
            model = onnx.load(str(path))
            for tensor in model.graph.initializer:
                raw = tensor.raw_data
                if len(raw) < min_bytes:  # small constants stay in the graph
                    continue
                key = hashlib.sha256(raw).hexdigest() + f":{tensor.data_type}:{list(tensor.dims)}"
                if key not in placed:
                    f.write(b"\0" * (-f.tell() % 64))  # aligned, as ONNX Runtime likes to map it
                    placed[key] = (f.tell(), len(raw))
                    f.write(raw)
                offset, length = placed[key]
                set_external_data(tensor, location=weights.name, offset=offset, length=length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
            onnx.save(model, str(path))
