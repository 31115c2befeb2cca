"""python -m benchmarks.sizes [NAME ...] [--tokenizer DIR] [--out DIR]

Exports each shipped ALBERT size by name with SEEDED RANDOM WEIGHTS, one fresh process per size (so each peak RSS
is that export's alone), validated on STS-B dev, and writes sizes.json and sizes.md: export time, peak RSS, file
sizes, fused-op counts and the int8 gate numbers the manifest recorded. Default: all eight sizes (xxlarge takes
about ten minutes and several GB on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .__main__ import ROOT, SHARED, machine_facts


def export_size(name: str, tokenizer: Path, texts: Path, folder: Path) -> dict:
    """One export in its own process; the figures come from the manifest it wrote (``summarize``)."""
    command = [sys.executable, "-m", "albert_onnx.cli", "export", name, "--random-weights", "--overwrite",
               "--tokenizer", str(tokenizer), "--validation-texts", str(texts), "-o", str(folder)]
    print("$", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=ROOT).returncode
    if status != 0:
        return {"name": name, "error": f"export exited {status} (its output is above)"}
    return summarize(name, folder)


def summarize(name: str, folder: Path) -> dict:
    """A table row from an exported folder's manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    model, variants = manifest["model"], manifest["variants"]
    int8 = variants["int8"]["validation"]["metrics"]
    return {
        "name": name, "layers": model["num_hidden_layers"], "hidden": model["hidden_size"], "act": model["hidden_act"],
        "seconds": manifest["export"]["seconds"], "peak_rss_mb": manifest["export"]["peak_rss_mb"],
        "mb": {v: round(entry["size"] / 2**20, 1) for v, entry in variants.items()},
        "fused_ops": variants["fused"]["fused_ops"],
        "status": {v: entry["validation"]["status"] for v, entry in variants.items()},
        "int8": {k: int8.get(k) for k in ("centred_cosine_mean", "rank_agreement", "token_cosine_min", "reference_spread",
                                          "batch_invariance_max_abs_diff")},
    }


def table(rows: list[dict]) -> str:
    lines = ["| size | layers × hidden | export s | peak RSS GiB | fp32 / fused / int8 / fp16 MiB | Attention · SkipLN · GELU (fused) "
             "| gates fp32 · fused · int8 · fp16 | int8 centred mean · rank · token cos min | reference spread |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} |" + " |" * 7)
            continue
        ops = r["fused_ops"]
        gelu = ops["FastGelu"] if r["act"] == "gelu_new" else ops["BiasGelu"]
        gelu_name = "FastGelu" if r["act"] == "gelu_new" else "BiasGelu"
        mb = " / ".join(f"{r['mb'][v]:.0f}" for v in ("fp32", "fused", "int8", "fp16"))
        status = " · ".join(r["status"][v] for v in ("fp32", "fused", "int8", "fp16"))
        q = r["int8"]
        fidelity = " · ".join("–" if q[k] is None else f"{q[k]:.4f}" for k in ("centred_cosine_mean", "rank_agreement", "token_cosine_min"))
        lines.append(f"| {r['name']} | {r['layers']} × {r['hidden']} | {r['seconds']:.0f} | {r['peak_rss_mb'] / 1024:.1f} | {mb} "
                     f"| {ops['Attention']} · {ops['SkipLayerNormalization']} · {gelu} {gelu_name} | {status} | {fidelity} "
                     f"| {q['reference_spread']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from albert_onnx_export.locate import SHIPPED_SIZES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.sizes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"sizes to export (default: all eight: {', '.join(SHIPPED_SIZES)})")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "models" / "albert-base-v2",
                        help="folder with the 30k spiece.model (the same for every size)")
    parser.add_argument("--texts", type=Path, default=SHARED / "data" / "stsbenchmark" / "sts-dev.csv", help="validation texts")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where sizes/NAME, sizes.json and sizes.md go")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SHIPPED_SIZES))
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}: choose from {', '.join(SHIPPED_SIZES)}")
    out, machine, rows = args.out.resolve(), machine_facts(threads=0), []
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names or SHIPPED_SIZES:  # the subprocess runs in ROOT: every path it gets is absolute
        rows.append(export_size(name, args.tokenizer.resolve(), args.texts.resolve(), out / "sizes" / name))
        (out / "sizes.json").write_text(json.dumps({"machine": machine, "sizes": rows}, indent=1) + "\n")  # after each size
    flags = ", ".join(f for f, on in machine["cpu_flags"].items() if on)
    text = (f"Exports by name, SEEDED RANDOM WEIGHTS, validated on STS-B dev; {machine['date']}, {machine['cpu']} ({flags}), "
            f"{machine.get('logical_cpus', machine.get('cores'))} logical CPUs, torch {machine['versions'].get('torch')}, onnxruntime {machine['versions'].get('onnxruntime')}.\n\n"
            + table(rows) + "\n")
    (out / "sizes.md").write_text(text)
    print(text)
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
