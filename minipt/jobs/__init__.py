"""The jobs: pretrain, finetune (and evaluate), the demo and its baseline, fill-mask, export, and where a --from
model comes from (sources.py)."""
