"""Inference through CUDA graphs: capture ``fn(x)`` once per input shape, then replay it.

A small network at batch 1 is launch-bound on a fast GPU (hundreds of kernel launches of a few
microseconds of work each); replaying a captured graph launches them all at once. Used by the
one-stage model for its field network (``MODEL.ONESTAGE.CUDA_GRAPHS``), whose forward has static
shapes and no host synchronisation; the decoder (data-dependent shapes) stays eager.

Rules, as in ``torch.cuda.graphs``: only for inference (``torch.no_grad()`` or inference mode);
``fn`` must not synchronise with the host or change shapes with the data. Anything else falls back
to calling ``fn`` directly: CPU inputs, gradients enabled, more input shapes than ``max_graphs``
(the least recently used graph is dropped). Graphs are captured under the caller's autocast state
(autocast's weight cast cache is off inside a capture, as torch requires) and are recaptured if a
parameter or buffer of ``fn`` was replaced by another tensor (in-place updates such as
``load_state_dict`` or an EMA update are seen by the graph without recapture).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Dict, Tuple

import torch
from torch import nn

__all__ = ["CUDAGraphRunner"]


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


class CUDAGraphRunner:
    """Callable ``runner(x) == fn(x)`` that replays a CUDA graph per distinct input
    (shape, dtype, device, memory format, autocast state).

    Args:
        fn: the function (usually an ``nn.Module`` in eval mode) of one tensor; its output may be a
            tensor or nested dicts / lists / tuples of tensors.
        max_graphs: graphs kept at once (each holds its own memory pool); 0 disables capturing.
        warmup_iters: eager calls on a side stream before a capture (cuDNN autotuning, lazy
            initialisation).
        clone_outputs: return copies of the graph's static outputs (default). Without it the
            returned tensors are overwritten by the next replay of the same graph.

    ``stats`` counts ``captures``, ``replays`` and ``eager`` calls.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], *, max_graphs: int = 4, warmup_iters: int = 3,
                 clone_outputs: bool = True) -> None:
        if max_graphs < 0 or warmup_iters < 1:
            raise ValueError(f"max_graphs must be >= 0 and warmup_iters >= 1, got {max_graphs}, {warmup_iters}")
        self.fn = fn
        self.max_graphs = int(max_graphs)
        self.warmup_iters = int(warmup_iters)
        self.clone_outputs = bool(clone_outputs)
        self._graphs: "OrderedDict[Tuple, Tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]]" = OrderedDict()
        self._signature: Tuple[int, ...] = ()
        self.stats: Dict[str, int] = {"captures": 0, "replays": 0, "eager": 0}

    def __deepcopy__(self, memo):
        # A captured graph cannot be copied; the copy (e.g. the EMA model) captures its own.
        return CUDAGraphRunner(copy.deepcopy(self.fn, memo), max_graphs=self.max_graphs,
                               warmup_iters=self.warmup_iters, clone_outputs=self.clone_outputs)

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def reset(self) -> None:
        """Drop every captured graph (and its memory pool)."""
        self._graphs.clear()

    def _tensor_signature(self) -> Tuple[int, ...]:
        if not isinstance(self.fn, nn.Module):
            return ()
        return tuple(t.data_ptr() for t in (*self.fn.parameters(), *self.fn.buffers()))

    @staticmethod
    def _key(x: torch.Tensor) -> Tuple:
        amp = torch.is_autocast_enabled("cuda")
        return (tuple(x.shape), x.dtype, x.device, x.is_contiguous(), amp,
                torch.get_autocast_dtype("cuda") if amp else None, torch.is_inference_mode_enabled())

    def __call__(self, x: torch.Tensor) -> Any:
        if (not isinstance(x, torch.Tensor) or x.device.type != "cuda" or torch.is_grad_enabled()
                or self.max_graphs == 0 or torch.cuda.is_current_stream_capturing()):
            self.stats["eager"] += 1
            return self.fn(x)
        signature = self._tensor_signature()
        if signature != self._signature:  # a parameter / buffer was replaced: the graphs read stale memory
            self.reset()
            self._signature = signature
        key = self._key(x)
        entry = self._graphs.get(key)
        if entry is None:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            entry = self._graphs[key] = self._capture(x, key)
        else:
            self._graphs.move_to_end(key)
        graph, static_input, static_output = entry
        static_input.copy_(x)
        graph.replay()
        self.stats["replays"] += 1
        return _clone(static_output) if self.clone_outputs else static_output

    def _capture(self, x: torch.Tensor, key: Tuple) -> Tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]:
        amp, amp_dtype = key[4], key[5]
        static_input = torch.empty_like(x).copy_(x)

        def run():
            with torch.autocast("cuda", dtype=amp_dtype or torch.float16, enabled=amp, cache_enabled=False):
                return self.fn(static_input)

        current = torch.cuda.current_stream(x.device)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(self.warmup_iters):
                run()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = run()
        self.stats["captures"] += 1
        return graph, static_input, static_output
