"""An untrained MEND editor network for a randomly initialised model at a published shape (timings only).

The GPU session (``benchmarks/h200_session.sh``) times MEND at LLaMA-3-8B-Instruct's shape with random
weights, where no trained editor network exists. This writes one with MEND's paper architecture
(:attr:`~crispedit_lite.editing.editors.mend.MendSettings.paper`: rank 1920, one hidden layer, identity
initialisation) for the matrices MEND's preset edits at that shape. Training would also fill the running
normalisation statistics of the gradient factors; here each is merged from 64 standard-normal rows
(mean about 0, scale about 1). Its edits mean nothing; its cost in time and memory is MEND's. The book
page ``mend`` trains a real one for SmolLM2.

Usage::

    python benchmarks/mend_random_editor.py random:llama3-8b-shape h200-out/mend-random.safetensors
"""

from __future__ import annotations

import sys

USAGE = "usage: python benchmarks/mend_random_editor.py random:SHAPE OUT.safetensors"


def main(argv: list[str]) -> int:
    """Write the untrained network of ``argv = [model, out]``; 2 with a one-line error on bad input."""
    if len(argv) != 2 or not argv[0].startswith("random:"):
        print(USAGE, file=sys.stderr)
        return 2
    import torch

    from crispedit_lite.editing.editors.mend import MendSettings, mend_modules
    from crispedit_lite.editing.loops.mend import save_editor
    from crispedit_lite.editing.updates.mend import MendNetwork
    from crispedit_lite.models.presets import SHAPE_PRESETS
    from crispedit_lite.models.structure import model_config, skeleton

    name, out = argv
    if name.split(":", 1)[1] not in SHAPE_PRESETS:
        print(f"model: {name!r} is not a known shape; known: {sorted(SHAPE_PRESETS)}", file=sys.stderr)
        return 2
    model = skeleton(model_config(name))  # meta device: shapes only, no memory
    settings = MendSettings(**MendSettings.paper)
    modules = mend_modules(model, settings)
    shapes = {m: tuple(model.get_submodule(m).weight.shape) for m in modules}
    net = MendNetwork(shapes, edit_lr=settings.mend_edit_lr, **settings.network())
    gen = torch.Generator().manual_seed(0)
    for transform in net.transforms.values():  # statistics a trained network would have collected
        for norm in (transform.u_norm, transform.delta_norm):
            norm.update(torch.randn(64, norm.mean.numel(), generator=gen))
    n_params = sum(p.numel() for p in net.parameters())
    save_editor(net, out, metadata={"note": f"untrained, for timings at {name}"})
    print(f"untrained MEND editor for {name}: {len(modules)} matrices, {n_params / 1e6:.1f} M parameters, "
          f"{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
