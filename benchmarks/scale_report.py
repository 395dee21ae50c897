"""``scale.py``'s hardware record and the summary table it prints per preset."""

from __future__ import annotations

import platform

import torch


def hardware(device: torch.device) -> dict:
    import transformers

    hw = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        hw.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            gpu_mem_GiB=prop.total_memory / 2**30,
            sm_count=prop.multi_processor_count,
            capability=f"{prop.major}.{prop.minor}",
        )
    return hw


def summary(name: str, res: dict) -> None:
    print(f"\n=== {name} ===", flush=True)
    if "build" in res:
        bd = res["build"]
        print(f"build            {bd['build_s']:.2f} s  {bd['n_params_B']:.3f} B params", flush=True)
    if "kfac" in res:
        k = res["kfac"]
        print(
            f"K-FAC            {k['kfac_tokens_per_s']:.0f} tok/s vs fwd/bwd {k['fwdbwd_tokens_per_s']:.0f} "
            f"tok/s -> {k['kfac_over_fwdbwd']:.2f} (target >= 0.5)",
            flush=True,
        )
    if "eigh" in res:
        e = res["eigh"]
        print(
            f"eigh per layer   {e['median_eigh_layer_s']:.3f} s (median), "
            f"all layers {e['all_layers_eigh_s']:.2f} s",
            flush=True,
        )
    if "project" in res:
        print("projection (one layer, per step):", flush=True)
        for k, v in res["project"]["variants"].items():
            print(f"  {k:44s} {v['median_s'] * 1e3:9.3f} ms  rel_err {v['rel_err']:.1e}", flush=True)
    if "step" in res:
        s = res["step"]
        print(f"step (batch {s['batch']} x {s['seq']} tokens):", flush=True)
        for k, v in s["variants"].items():
            pk = v["peak_mem_GiB"]
            print(
                f"  {k:44s} {v['median_s'] * 1e3:9.2f} ms  x{v['ratio_to_plain_ft']:.3f}  "
                f"peak {pk if pk is not None else float('nan'):.1f} GiB",
                flush=True,
            )
        print(
            f"  best: {s['best_crispedit_variant']} x{s['best_ratio_to_plain_ft']:.3f} (target 1.15)",
            flush=True,
        )
    if "schedule" in res:
        sc = res["schedule"]
        print(f"3,000-edit schedule ({sc['steps']} steps, EXTRAPOLATED):", flush=True)
        for k, v in sc["variants"].items():
            print(f"  {k:44s} {v['train_s']:8.1f} s train, {v['with_eigh_s']:8.1f} s with eigh", flush=True)
        for k, v in sc.get("full_run", {}).items():
            print(f"  measured full run {k}: {v['wall_s']:.1f} s", flush=True)
