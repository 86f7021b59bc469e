"""``ckptscan memory PATH...``: inference and training memory estimates, and whether they fit."""

from __future__ import annotations

import argparse

from ckptscan.cli.common import (
    EXIT_CODES_HELP,
    add_reduction_arguments,
    add_remote_arguments,
    build_reports,
    configure_remote,
    emit_json,
    exit_code,
    gpu_size,
    help_formatter,
    make_console,
    pipeline_options,
    positive,
    report_errors,
)


def memory_parser() -> argparse.ArgumentParser:
    from ckptscan.analyze import memory

    parser = argparse.ArgumentParser(
        prog="ckptscan memory",
        description="Estimate inference memory (weights at each reduction target + KV cache) and training memory "
        "(weights, master weights, gradients, optimizer state, activations) from the checkpoint alone. The "
        "architecture comes from a config.json beside the file, GGUF metadata, or the tensor shapes. Formulas "
        "and their sources: docs/analysis.md.",
        epilog=EXIT_CODES_HELP,
        formatter_class=help_formatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, index files or model folders")
    parser.add_argument("--optimizer", default="adamw", type=str.lower,
                        choices=[*memory.OPTIMIZERS, *memory.OPTIMIZER_ALIASES], help="default: adamw")  # fmt: skip
    parser.add_argument("--precision", default="bf16-mixed", type=str.lower,
                        choices=[*memory.PRECISIONS, *memory.PRECISION_ALIASES],
                        help="fp32; bf16 = bf16-mixed (autocast, as HF Trainer --bf16 and Lightning bf16-mixed: "
                        "fp32 weights and gradients, bf16 copies saved); fp16-mixed; bf16-true (pure bf16); "
                        "bf16-master / fp16-master (ZeRO: 16-bit weights + fp32 master); "
                        "default: bf16-mixed")  # fmt: skip
    parser.add_argument("--batch", type=positive, default=1, help="sequences per step (and KV-cache batch)")
    parser.add_argument("--seq", type=positive, default=None, help="tokens per sequence (default: the model's "
                        "context, at most 2048 for training)")  # fmt: skip
    parser.add_argument("--context", type=positive, default=None,
                        help="KV-cache tokens for inference (default: --seq, else the model's context)")  # fmt: skip
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing, one layer at a time")
    parser.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                        help="freeze parameters whose name matches this glob (repeatable), "
                        "e.g. 'model.embed_tokens.*'")  # fmt: skip
    parser.add_argument("--attention", choices=[*memory.ATTENTION, *memory.ATTENTION_ALIASES], default="auto",
                        help="auto (default): the SDPA kernel PyTorch picks for the dtype, head layout, mask and "
                        "device; or force flash, efficient, math, eager")  # fmt: skip
    parser.add_argument("--device", choices=memory.DEVICES, default="cuda",
                        help="cuda (default) or cpu: kernel rules and dropout-mask width differ")  # fmt: skip
    parser.add_argument("--padded", action="store_true",
                        help="batches carry a padding mask (no flash kernel; K/V heads expanded)")  # fmt: skip
    parser.add_argument("--last-token-logits", action="store_true",
                        help="inference: logits for the last position only (generate()), "
                        "not every position")  # fmt: skip
    parser.add_argument("--lora-rank", type=positive, default=None, metavar="R",
                        help="LoRA fine-tuning: the base frozen, rank-R adapters train")  # fmt: skip
    parser.add_argument("--lora-alpha", type=positive, default=16, help="LoRA alpha (reported; no memory effect)")
    parser.add_argument("--lora-targets", default=",".join(memory.LORA_DEFAULT_TARGETS), metavar="NAMES",
                        help="comma-separated module names the adapters wrap (default: q_proj,v_proj)")  # fmt: skip
    parser.add_argument("--qlora", action="store_true",
                        help="QLoRA: 4-bit NF4 base (double-quantized), LoRA adapters (rank 16 unless --lora-rank); "
                        "use with --optimizer paged-adamw-8bit")  # fmt: skip
    parser.add_argument("--gpus", type=positive, default=1, help="GPUs training together (figures are per GPU)")
    parser.add_argument("--sharding", default="ddp", type=str.lower,
                        choices=[*memory.SHARDING, *memory.SHARDING_ALIASES],
                        help="ddp (default), zero1, zero2, zero3 / fsdp")  # fmt: skip
    parser.add_argument("--gpu", metavar="SIZE|NAME", default=None, type=gpu_size,
                        help="answer 'will it fit?': a size (24GiB, 80GB) or a card (H100, A100-40GB, A10G, L4, "
                        "RTX4090, ...); gives the margin and the largest batch and sequence that fit")  # fmt: skip
    parser.add_argument("--optimizer-impl", choices=list(memory.OPTIMIZER_IMPLS), default="foreach",
                        help="PyTorch Adam/AdamW step: foreach (CUDA default), for-loop, "
                        "fused (no temporaries)")  # fmt: skip
    parser.add_argument("--kv-bytes", type=positive, default=None,
                        help="bytes per KV-cache element (default: the model's compute width: "
                        "4 for fp32 weights)")  # fmt: skip
    add_reduction_arguments(parser)
    parser.add_argument("--json", action="store_true", help="the scan JSON document, with these memory options")
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    add_remote_arguments(parser)
    return parser


def run_memory(argv: list[str]) -> int:
    args = memory_parser().parse_args(argv)
    configure_remote(args)
    reports = build_reports(args.paths, pipeline_options(args))
    if args.json:
        from ckptscan.report.json import document

        emit_json(document(reports))
        report_errors(reports)
    else:
        from ckptscan.report.terminal import memory_report

        console = make_console(args.no_color)
        for renderable in memory_report(reports):
            console.print(renderable)
    return exit_code(reports, None)
